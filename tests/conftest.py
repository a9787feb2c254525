"""Shared test set-up: a private shard cache, a tiny digits config and real TinyImageNet.

``real_tinyimagenet`` unpacks the project's low-shot TinyImageNet subset once per session
into a pytest tmp dir. The tarball is ``$CSKD_TINYIMAGENET_TARBALL`` if set, else
``shared/data/tiny-imagenet-200-lowshot.tar.gz`` in the folder holding the repository (a CI
checkout: ``<clone>/../shared``) or in one of that folder's parents (a git worktree nested
deeper, e.g. ``/work/wt/<name>`` beside ``/work/shared``). Tests using it skip only when the
tarball itself is missing.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

# One shard cache for the whole session, outside the user's ~/.cache.
os.environ.setdefault("CSKD_CACHE_DIR", tempfile.mkdtemp(prefix="cskd-test-cache-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# config.mixed_precision defaults to "auto", which is mixed_bfloat16 on a CPU with bfloat16
# hardware (this project's CI machine has one). Tests compare float32 numerics (NumPy
# transcriptions, golden files, bit-exact resume), so "auto" resolves to float32 in every
# test and every command a test starts; tests of the auto rule and of bf16 itself remove
# or set this variable, or name the policy.
os.environ["CSKD_PRECISION"] = "float32"

BIN = os.path.dirname(sys.executable)


def console_script(name):
    """Path of an installed console script of this package (same virtualenv)."""
    return os.path.join(BIN, name)


def one_line_error(result):
    """The ``error: ...`` line a failed command (a CompletedProcess) ends with; asserts it
    failed without a traceback."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[-1]


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """Resets Keras' global dtype policy to float32 after every test.

    ``runtime.setup`` (every ``train()``) sets the policy for the whole process, and a test
    that trains under mixed_bfloat16 would otherwise leave it set: the next test's models
    (built without ``runtime.setup``) would silently compute in bfloat16 too.
    """
    yield
    import keras

    keras.config.set_dtype_policy("float32")


def make_tiny_config():
    """Digits, a narrow PreAct ResNet-18, a few steps: seconds per epoch on 2 cores."""
    from cskd_tf.config import default_config

    config = default_config()
    config.dataset = "digits"
    config.model = "preact_resnet18"
    config.model_width = 8
    config.augment = "digits"
    config.max_train_per_class = 24
    config.batch_size = 32
    config.num_epochs = 2
    config.learning_rate = 0.05
    config.lr_decay_epochs = (1,)
    config.verbose = 0
    return config


@pytest.fixture
def tiny_config():
    """A fresh :func:`make_tiny_config` for each test."""
    return make_tiny_config()


TINYIMAGENET_TARBALL_ENV = "CSKD_TINYIMAGENET_TARBALL"
TINYIMAGENET_TARBALL = Path("shared", "data", "tiny-imagenet-200-lowshot.tar.gz")
TINYIMAGENET_ROOT = "tiny-imagenet-200-lowshot"  # the tarball's top folder


def tinyimagenet_tarball():
    """Where the low-shot tarball is (see the module docstring); may not exist."""
    override = os.environ.get(TINYIMAGENET_TARBALL_ENV)
    if override:
        return Path(override).expanduser()
    repo = Path(__file__).resolve().parents[1]
    for folder in repo.parents:
        if (folder / TINYIMAGENET_TARBALL).is_file():
            return folder / TINYIMAGENET_TARBALL
    return repo.parent / TINYIMAGENET_TARBALL  # the CI layout, named in the skip reason


def unpack(tarball, dest):
    """Extracts ``tarball`` (all of it: 25k small files, 100 MB) into ``dest``.

    GNU tar when there is one: it extracts many small files an order of magnitude faster
    than Python's tarfile, which is only the fallback. Extracting a subset would save
    little: the val split alone is 5,000 of the files and its annotation file must find
    all of them."""
    tar = shutil.which("tar")
    if tar:
        subprocess.run([tar, "-xzf", str(tarball), "-C", str(dest), "--no-same-owner"],
                       check=True, capture_output=True)
        return
    with tarfile.open(tarball, "r|gz") as archive:
        archive.extractall(dest, filter="data")


@pytest.fixture(scope="session")
def real_tinyimagenet(tmp_path_factory):
    """data_dir of the real TinyImageNet-200 low-shot subset (200 classes, 100 train and 25
    val images each), unpacked once per session; skips if the tarball is missing."""
    tarball = tinyimagenet_tarball()
    if not tarball.is_file():
        pytest.skip(f"{tarball} not found; put the project's shared/data/ beside the "
                    f"repository or set ${TINYIMAGENET_TARBALL_ENV} to the tarball")
    dest = tmp_path_factory.mktemp("tinyimagenet")
    unpack(tarball, dest)
    root = dest / TINYIMAGENET_ROOT
    assert (root / "wnids.txt").is_file(), f"{tarball} has no {TINYIMAGENET_ROOT}/wnids.txt"
    return str(root)

"""Shared test set-up: a private shard cache and a tiny digits config."""

import os
import sys
import tempfile

import pytest

# One shard cache for the whole session, outside the user's ~/.cache.
os.environ.setdefault("CSKD_CACHE_DIR", tempfile.mkdtemp(prefix="cskd-test-cache-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BIN = os.path.dirname(sys.executable)


def console_script(name):
    """Path of an installed console script of this package (same virtualenv)."""
    return os.path.join(BIN, name)


@pytest.fixture
def tiny_config():
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

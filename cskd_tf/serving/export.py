"""A finished training run -> a TF Serving model version, ``saved_models/NAME/<version>/``.

``export_workdir`` (what ``cskd-export`` runs):

1. loads the run's last checkpoint (:func:`cskd_tf.training.restore.restore_run`),
   or a ``.keras`` file (in a run folder, or standalone: then what the model carries
   defines the export, as for ``CSKDModel.export``);
2. writes the three signatures of :mod:`cskd_tf.signatures` with
   ``keras.export.ExportArchive`` into ``NAME/.tmp-<version>-<random>/`` beside the target;
3. adds the assets (labels.txt, the training config, cskd_export.json with the
   preprocessing and data facts) so the export can be used and evaluated on its own;
4. loads the result back and checks it against the Keras model (signature contract and
   predictions) — a broken export never reaches the folder a server watches;
5. renames the folder to ``NAME/<version>`` (atomic: a polling server sees no half
   export) and adds the version to ``saved_models/models.config``.

An existing version is never overwritten; the default version is one above the highest
numeric folder in ``NAME/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import uuid

import numpy as np

from cskd_tf import progress
from cskd_tf.errors import CSKDError
from cskd_tf.runs import blocking_file
from cskd_tf import signatures as sig
from cskd_tf.serving import ServingError
from cskd_tf.serving import loading, models_config

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Self-check tolerance between the reloaded export and the Keras model; the tests hold
# the real contract (1e-5) on the evaluation pipeline.
VERIFY_ATOL = 1e-4


@dataclasses.dataclass
class ExportResult:
    path: str  # saved_models/NAME/<version>, absolute
    model_name: str
    version: int
    models_config: str  # path of the updated models.config
    base_path: str  # what models.config tells the server


def check_model_name(name) -> str:
    if not name or not MODEL_NAME.match(str(name)):
        raise ServingError(f"--model_name={name!r} is not usable as a TF Serving model name and "
                           "URL part; use letters, digits, '_', '-' or '.', starting with a "
                           "letter or digit")
    return str(name)


def existing_versions(model_dir) -> list:
    """The numeric version folders of ``model_dir`` (those TF Serving would consider)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


def next_version(model_dir) -> int:
    versions = existing_versions(model_dir)
    return (versions[-1] + 1) if versions else 1


def resolve_augment(config, facts) -> str:
    """The resolved eval transform name of a run.

    ``data.json`` stores ``config.augment`` as given, which may be ``auto``; then the
    dataset source's default is what evaluation used.
    """
    from cskd_tf.data import augment as augment_lib

    name = facts.get("augment") or "auto"
    if name == "auto":
        from cskd_tf.data.sources import get_source

        try:
            name = get_source(config.dataset, config.data_dir).default_augment
        # The source may need its data to say (tfds: the builder; shards: the cache), and
        # sources raise the typed errors; ImportError when tensorflow_datasets is missing.
        except (CSKDError, ImportError) as error:
            raise ServingError(f"cannot resolve config.augment='auto' for {config.dataset} "
                               f"({error}); retrain or set augment in DIR/data.json") from None
    return augment_lib.check_name(name)


def preprocess_for(facts, augment):
    """The evaluation transform of a run (uint8 any size -> float32 model input)."""
    from cskd_tf import data as data_lib

    info = data_lib.DatasetInfo(
        name=str(facts.get("name", "")), num_classes=int(facts["num_classes"]),
        class_names=list(facts["class_names"]), image_shape=tuple(facts["image_shape"]),
        mean=tuple(facts["mean"]), std=tuple(facts["std"]), splits=dict(facts.get("splits", {})),
        train_counts=np.asarray(facts.get("train_counts", []), np.int64), augment=augment)
    return data_lib.eval_preprocess(info, augment)


def _run_manifest(directory, *, config, facts, workdir) -> dict:
    """Writes the run's training config (assets/config.json); the run's manifest fields."""
    from cskd_tf import config as config_lib

    assets = os.path.join(directory, "assets")
    os.makedirs(assets, exist_ok=True)
    with open(os.path.join(assets, loading.CONFIG), "w", encoding="utf-8") as f:
        f.write(config_lib.to_json(config) + "\n")
    metrics_path = os.path.join(workdir, "metrics.json")
    metrics = None
    if os.path.exists(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)
    return {"source_workdir": os.path.abspath(workdir),
            "data": {k: v for k, v in facts.items() if k != "cache_path"},
            "metrics": metrics}


def _functions_for_run(checked, top_k):
    """(ServingFunctions, feature dim, manifest fields, writer of the run's assets)."""
    from cskd_tf.training.restore import restore_run

    config, facts, model = restore_run(checked)
    run_path = checked.path
    augment = resolve_augment(config, facts)
    description = sig.describe_preprocessing(facts["image_shape"], facts["mean"], facts["std"],
                                             augment)
    functions = sig.ServingFunctions(model, preprocess_for(facts, augment), facts["class_names"],
                                     facts["image_shape"], top_k=top_k, description=description)
    feature_dim = int(model.embed(np.zeros((1, *facts["image_shape"]), np.float32)).shape[-1])

    def write(directory):
        return _run_manifest(directory, config=config, facts=facts, workdir=run_path)

    return functions, feature_dim, write


def _functions_for_keras_file(path, top_k):
    """The same for a standalone .keras file: everything from what the model carries."""
    from cskd_tf.training.restore import load_keras_file

    model = load_keras_file(path)
    if not hasattr(model, "forward") or not hasattr(model, "backbone"):
        raise ServingError(f"{path} holds a {type(model).__name__}, not a cskd_tf CSKDModel; "
                           "export a plain Keras model with model.export(path)")
    functions, facts = sig.functions_for_model(model, top_k)

    def write(directory):
        return {"source_keras_file": os.path.abspath(path)}

    return functions, facts["feature_dim"], write


def _verify(directory, functions, contract, image_shape):
    """Reloads the staged export and compares it with the Keras model; ServingError if off."""
    import tensorflow as tf

    found = loading.signature_metadata(directory)
    for name, expected in contract.items():
        if name not in found["signature_def"]:
            raise ServingError(f"export self-check: signature {name} is missing")
        got = loading.tensor_summary(found, name)
        want = {side: {t: (d, list(s)) for t, (d, s) in spec.items()}
                for side, spec in expected.items()}
        if got != want:
            raise ServingError(f"export self-check: signature {name} is {got}, expected {want}")
    loaded = tf.saved_model.load(directory)
    # The Keras side traced as the export is: under a mixed policy, graph mode fuses
    # bfloat16 ops differently from eager execution (probabilities ~3e-3 apart), while a
    # traced function and the reloaded export agree exactly.
    reference_fn = tf.function(functions.serving_default)
    size, _, channels = image_shape
    rng = np.random.default_rng(0)
    # The training size and an off size, so the in-graph resize is exercised too.
    for h, w in ((size, size), (size + 3, size + 5)):
        images = tf.constant(rng.integers(0, 256, (2, h, w, channels), dtype=np.uint8))
        served = loaded.signatures[sig.SERVING_DEFAULT](images=images)
        reference = reference_fn(images)
        diff = float(np.max(np.abs(served[sig.PROBABILITIES].numpy()
                                   - reference[sig.PROBABILITIES].numpy())))
        if not diff <= VERIFY_ATOL:
            raise ServingError(f"export self-check: served probabilities differ from the Keras "
                               f"model by {diff:.3g} at {h}x{w} input")


def _check_creatable(folder):
    """ServingError if ``folder`` or its nearest existing parent is a file, not a folder."""
    blocking = blocking_file(folder)
    if blocking is not None:
        raise ServingError(f"cannot create {folder}: {blocking} is a file, not a folder; pass "
                           "--export_base=DIR to a folder (or a path that does not exist yet)")


def export_workdir(workdir, model_name, export_base="saved_models", version=None, top_k=5,
                   version_policy=None, serving_base_path="", verify=True,
                   verbose=1) -> ExportResult:
    """Exports the finished run in ``workdir`` as ``export_base/model_name/<version>``.

    ``workdir`` may also be the run's ``DIR/model.keras`` file
    (see :func:`cskd_tf.runs.load_run`), or a standalone ``.keras`` file of a
    CSKDModel (e.g. trained from Python): then the model's own input size, normalisation,
    class names and pixel range define the export, as ``model.export`` does.

    Args:
      version: an int >= 1, or None for the next free version.
      top_k: classes reported by ``top_k_*`` (capped at the number of classes).
      version_policy: ``specific``, ``all`` or ``latest`` for models.config; None keeps
        the model's current policy (``specific`` for a new model).
      serving_base_path: where the server sees ``export_base`` (e.g. ``/models`` inside
        the tensorflow/serving container); default: the absolute local path.
      verify: reload the export and compare it with the Keras model before publishing.
      verbose: 0 prints no progress (one line per step on stderr otherwise).
    """
    from cskd_tf.runs import is_standalone_keras_file, load_run

    model_name = check_model_name(model_name)
    if int(top_k) < 1:
        raise ServingError(f"--top_k must be >= 1 (got {top_k})")
    if version is not None and int(version) < 1:
        raise ServingError(f"--version must be >= 1 (got {version}); TF Serving versions are "
                           "positive integers")
    if version_policy is not None and version_policy not in models_config.POLICIES:
        raise ServingError(f"--version_policy={version_policy!r} is not one of "
                           f"{', '.join(models_config.POLICIES)}")
    standalone = is_standalone_keras_file(workdir)
    checked = None if standalone else load_run(workdir, need_finished=True)

    export_base = os.path.abspath(os.path.expanduser(export_base))
    model_dir = os.path.join(export_base, model_name)
    _check_creatable(model_dir)  # before the minutes of loading and tracing
    version = int(version) if version is not None else next_version(model_dir)
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ServingError(f"{final} already exists; exports are never overwritten — omit "
                           f"--version to use the next free one ({next_version(model_dir)})")

    steps = progress.Steps(f"cskd-export {model_name}/{version}", total=3 + bool(verify),
                           verbose=verbose)
    if standalone:
        steps.next(f"loading the model {workdir}")
        functions, feature_dim, run_assets = _functions_for_keras_file(workdir, top_k)
    else:
        steps.next(f"loading the run {workdir}")
        functions, feature_dim, run_assets = _functions_for_run(checked, top_k)

    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as error:
        raise ServingError(f"cannot create {model_dir} ({error.strerror or error}); pass "
                           "--export_base=DIR to a folder you can write") from None
    # Hidden and non-numeric: TF Serving ignores it while it is being written.
    staging = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    try:
        steps.next("tracing the signatures and writing the SavedModel")
        sig.write_saved_model(staging, functions)
        extra = {"model_name": model_name, "version": int(version), **run_assets(staging)}
        contract = sig.write_assets(staging, functions, feature_dim, extra=extra)
        if verify:
            steps.next("self-check: reloading it and comparing with the Keras model")
            _verify(staging, functions, contract, functions.image_shape)
        if os.path.exists(final):  # another export took this version meanwhile
            raise ServingError(f"{final} appeared while exporting; rerun cskd-export")
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    base_path = (os.path.join(serving_base_path, model_name) if serving_base_path
                 else model_dir)
    steps.next(f"published {final}; updating models.config")
    config_path = models_config.update(export_base, model_name, base_path, version,
                                       version_policy)
    return ExportResult(path=final, model_name=model_name, version=version,
                        models_config=config_path, base_path=base_path)

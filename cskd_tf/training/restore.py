"""A finished (or interrupted) cskd-train run back as a model: the one way to reload one.

    run = restore_from_workdir("runs/digits")       # Restored(config, facts, model)
    config, facts, model = run                      # it unpacks like a tuple

The model is rebuilt exactly as training built it (:func:`cskd_tf.training.fit_setup.build_model`
from ``config.json`` and the dataset facts in ``data.json``: architecture, head, input
normalization) and the last checkpoint's model weights are restored; the optimizer's slots
are left out. ``cskd-eval``, ``cskd-plot``, ``cskd-export`` and the KD teacher loader
(:mod:`cskd_tf.training.teacher`) all go through here.

Errors are :class:`~cskd_tf.errors.WorkdirError` with one line: no run (no config.json),
an incomplete run (no data.json or no checkpoint), an unreadable newest checkpoint, or a
checkpoint that does not fit the model the config describes.
"""

from __future__ import annotations

import gc
import os
import zipfile
from typing import NamedTuple

import tensorflow as tf

from cskd_tf import runtime
from cskd_tf.errors import WorkdirError
from cskd_tf.evaluation.runs import recorded_precision
from cskd_tf.training.resume import unreadable
from cskd_tf.training.workdir import Workdir


class Restored(NamedTuple):
    config: object  # the run's ml_collections.ConfigDict
    facts: dict  # data.json: num_classes, image_shape, mean, std, class_names, ...
    model: object  # the CSKDModel with the last checkpoint's weights


def read_run(path):
    """(Workdir, config, data facts) of a run, without building anything."""
    workdir = Workdir(path)
    return workdir, workdir.load_config(), workdir.read("data.json")


def restore_model(workdir: Workdir, config, facts):
    """Builds ``config``'s model for ``facts`` and restores the last checkpoint into it."""
    from cskd_tf.training.fit_setup import build_model

    latest = tf.train.latest_checkpoint(workdir.checkpoint_dir)
    if latest is None:
        raise WorkdirError(f"{workdir.path} has no checkpoint; rerun cskd-train with this "
                           "--workdir to finish training")
    broken = unreadable(latest)
    if broken:
        keras_file = workdir.file("model.keras")
        instead = (f"{keras_file} holds the same trained model (cskd-eval and cskd-export "
                   "take its path)" if os.path.exists(keras_file) else
                   "rerun cskd-train with this --workdir (it resumes from the newest readable "
                   "checkpoint)")
        raise WorkdirError(f"the newest checkpoint {latest} is unreadable ({broken}); {instead}")
    model = build_model(config, facts["num_classes"], facts["image_shape"], facts["mean"],
                        facts["std"], class_names=facts.get("class_names"))
    fits = True
    try:
        status = tf.train.Checkpoint(model=model).restore(latest)
        status.expect_partial()  # the optimizer's slots are not needed
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError):
        fits = False
    if not fits:
        model = status = None
        _drop_quietly()
        raise WorkdirError(f"the checkpoint in {workdir.path} does not fit a "
                           f"{config.model!r} model; check the workdir's config.json (or the "
                           "model name asked for)") from None
    return model


def restore_from_workdir(path) -> Restored:
    """The run in ``path`` with its last checkpoint's weights, after applying the run's
    seed and precision policy (what evaluation and export of the run want; the KD teacher,
    loaded inside another run, uses :func:`read_run` and :func:`restore_model` instead)."""
    workdir, config, facts = read_run(path)
    setup_as_trained(workdir, config)
    return Restored(config, facts, restore_model(workdir, config, facts))


def setup_as_trained(workdir: Workdir, config):
    """``runtime.setup`` with the precision the run recorded (data.json), not what
    ``auto`` would resolve to on this machine, so its metrics are recomputed as trained."""
    recorded = recorded_precision(workdir.path, config.mixed_precision)
    if recorded:
        config = config.copy_and_resolve_references()  # the caller's config stays as written
        config.mixed_precision = recorded
    runtime.setup(config)


# ------------------------------------------------------- a workdir or its DIR/model.keras
def is_standalone_keras_file(path) -> bool:
    """Whether ``path`` is an existing ``.keras`` file outside a cskd-train run folder.

    Such a file (e.g. ``model.save`` after training from Python) carries what serving and
    evaluation need in the model itself (``CSKDModel(class_names=..., pixel_max=...)``);
    a file inside a run folder is read with the run's config and data facts instead.
    """
    path = str(path)
    return (path.endswith(".keras") and os.path.isfile(path)
            and not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(path)),
                                                "data.json")))


def check_run(path, need_finished=True):
    """(Workdir, .keras path or None) for a run folder or a .keras file saved in one."""
    keras_file = str(path).endswith(".keras")
    run = Workdir(os.path.dirname(os.path.abspath(path)) if keras_file else path)
    if keras_file and not os.path.isfile(path):
        raise WorkdirError(f"{path} does not exist; pass a .keras file saved by model.save or "
                           "cskd-train (DIR/model.keras), or a cskd-train workdir")
    if keras_file and not os.path.exists(run.file("data.json")):
        raise WorkdirError(f"{path} is not inside a cskd-train workdir (no data.json beside "
                           "it); keep it in its run folder")
    if need_finished and not run.is_finished():
        raise WorkdirError(f"{run.path} holds no finished model (no metrics.json); train it to "
                           "the end with cskd-train --workdir=DIR first")
    return run, (path if keras_file else None)


def load_run(path, need_finished=True):
    """(config, data facts, model, workdir path) of a run, or of a .keras file saved in one.

    ``path`` is a cskd-train workdir (the model is rebuilt from its last checkpoint) or a
    ``.keras`` file in one (``DIR/model.keras``, loaded with ``keras.models.load_model``;
    its folder gives the config and data facts).
    """
    return load_checked_run(*check_run(path, need_finished))


def load_checked_run(run: Workdir, keras_file=None):
    """:func:`load_run` for what :func:`check_run` returned."""
    if keras_file is None:
        config, facts, model = restore_from_workdir(run.path)
        return config, facts, model, run.path
    _, config, facts = read_run(run.path)
    setup_as_trained(run, config)
    return config, facts, load_keras_file(keras_file), run.path


def load_keras_file(path):
    """``keras.models.load_model(path)``, cskd_tf's objects registered; WorkdirError on failure."""
    import keras

    import cskd_tf

    cskd_tf.register_keras_objects()
    if not zipfile.is_zipfile(path):
        # Keras would say "File not found" about a file that is there.
        raise WorkdirError(f"{path} is not a .keras file (not a zip archive: truncated or "
                           "overwritten?); pass a .keras file saved by model.save or "
                           "cskd-train, or the run folder to rebuild the model from its "
                           "checkpoint")
    try:
        return keras.models.load_model(path)
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WorkdirError(f"cannot load {path} as a Keras model ({reason}); pass a .keras file "
                           "saved by model.save or cskd-train") from None


def _drop_quietly():
    """Collects a half-restored model now, so TensorFlow's "unrestored values" warnings
    do not trail the one-line error."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        gc.collect()
    finally:
        logger.setLevel(level)

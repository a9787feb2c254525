"""A finished (or interrupted) cskd-train run back as a model: the one way to reload one.

    run = load_run("runs/digits")                   # cskd_tf.runs: the folder, checked
    config, facts, model = restore_run(run)         # Restored(config, facts, model)
    config, facts, model = restore_from_workdir("runs/digits")   # the same in one call

The model is rebuilt exactly as training built it (:func:`cskd_tf.training.build.build_model`
from ``config.json`` and the dataset facts in ``data.json``: architecture, head, input
normalization) and the last checkpoint's model weights are restored; the optimizer's slots
are left out. A run read from its ``DIR/model.keras`` (``load_run("runs/digits/model.keras")``)
loads that file instead. ``cskd-eval``, ``cskd-plot``, ``cskd-export`` and the KD teacher
loader (:mod:`cskd_tf.training.teacher`) all go through here; reading and checking the
folder itself is :mod:`cskd_tf.runs`.

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
from cskd_tf.runs import Run, load_run
from cskd_tf.training.build import build_model
from cskd_tf.training.resume import unreadable


class Restored(NamedTuple):
    config: object  # the run's ml_collections.ConfigDict
    facts: dict  # data.json: num_classes, image_shape, mean, std, class_names, ...
    model: object  # the CSKDModel with the last checkpoint's weights


def restore_model(run: Run, config, facts):
    """Builds ``config``'s model for ``facts`` and restores ``run``'s last checkpoint into it.

    Leaves the process's seed and precision policy alone (the KD teacher is loaded inside
    another run this way, with ``config`` from :meth:`Run.load_config`, possibly edited).
    """
    folder = run.folder
    latest = tf.train.latest_checkpoint(folder.checkpoint_dir)
    if latest is None:
        raise WorkdirError(f"{folder.path} has no checkpoint; rerun cskd-train with this "
                           "--workdir to finish training")
    broken = unreadable(latest)
    if broken:
        keras_file = folder.file("model.keras")
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
        raise WorkdirError(f"the checkpoint in {folder.path} does not fit a "
                           f"{config.model!r} model; check the workdir's config.json (or the "
                           "model name asked for)") from None
    return model


def restore_run(run: Run) -> Restored:
    """The model of ``run`` (from :func:`cskd_tf.runs.load_run`) after applying the run's
    seed and precision policy, what evaluation and export of the run want: its
    ``DIR/model.keras`` when the run was read from that file, else its last checkpoint."""
    config, facts = run.load_config(), run.facts()
    setup_as_trained(run, config)
    if run.keras_file:
        return Restored(config, facts, load_keras_file(run.keras_file))
    return Restored(config, facts, restore_model(run, config, facts))


def restore_from_workdir(path, need_finished=False) -> Restored:
    """:func:`restore_run` of ``load_run(path)``: a run folder or its ``DIR/model.keras``."""
    return restore_run(load_run(path, need_finished=need_finished))


def setup_as_trained(run: Run, config):
    """``runtime.setup`` with the precision the run recorded (data.json), not what
    ``auto`` would resolve to on this machine, so its metrics are recomputed as trained."""
    if run.precision != "auto":
        config = config.copy_and_resolve_references()  # the caller's config stays as written
        config.mixed_precision = run.precision
    runtime.setup(config)


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

"""A finished (or interrupted) cskd-train run back as a model: the one way to reload one.

    run = restore_from_workdir("runs/digits")       # Restored(config, facts, model)
    config, facts, model = run                      # it unpacks like a tuple

The model is rebuilt exactly as training built it (:func:`cskd_tf.training.fit_setup.build_model`
from ``config.json`` and the dataset facts in ``data.json``: architecture, head, input
normalization) and the last checkpoint's model weights are restored; the optimizer's slots
are left out. ``cskd-eval``, ``cskd-plot``, ``cskd-export`` and the KD teacher loader
(:mod:`cskd_tf.training.teacher`) all go through here.

Errors are :class:`~cskd_tf.errors.WorkdirError` with one line: no run (no config.json),
an incomplete run (no data.json or no checkpoint), or a checkpoint that does not fit the
model the config describes.
"""

from __future__ import annotations

import gc
from typing import NamedTuple

import tensorflow as tf

from cskd_tf import runtime
from cskd_tf.errors import WorkdirError
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
    model = build_model(config, facts["num_classes"], facts["image_shape"], facts["mean"],
                        facts["std"])
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


def restore_from_workdir(path, *, model_name=None, setup_runtime=True) -> Restored:
    """The run in ``path`` with its last checkpoint's weights.

    Args:
      model_name: build this architecture instead of the run's ``config.model`` (a KD
        teacher's ``config.kd.teacher_model``); the checkpoint must fit it.
      setup_runtime: apply the run's seed and precision policy first (what evaluation and
        export of the run want); a loader inside another run (the KD teacher) passes False
        so the running job keeps its own.
    """
    workdir, config, facts = read_run(path)
    if model_name:
        config.model = model_name
    if setup_runtime:
        runtime.setup(config)
    return Restored(config, facts, restore_model(workdir, config, facts))


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

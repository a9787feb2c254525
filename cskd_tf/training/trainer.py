"""The thin training loop: config → data → model → fit → evaluate.

``train(config, workdir)`` is what ``cskd-train`` runs. The model, steps and
callbacks come from training/fit_setup.py, which the tuner shares; its
``build_model`` is also what restoring a run (training/restore.py: evaluation,
export, the KD teacher) uses, so a model is always constructed the same way.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import tensorflow as tf

from cskd_tf import config as config_lib
from cskd_tf import data as data_lib
from cskd_tf import runtime
from cskd_tf.runs import Workdir, checkpoints
from cskd_tf.training import distribute, fit_setup, resume
# Re-exported: restoring a run (training/restore.py) builds its model the same way.
from cskd_tf.training.fit_setup import build_model, compile_model  # noqa: F401


def info_to_json(info) -> dict:
    payload = dataclasses.asdict(info)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in payload.items()}


def _warn(line):
    print(line, file=sys.stderr, flush=True)


def make_checkpoint(model, workdir: Workdir):
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, workdir.checkpoint_dir, max_to_keep=2)
    return checkpoint, manager, epoch


def train(config, workdir_path, overwrite=False, extra_callbacks=()):
    """Trains (or resumes) a run and writes DIR/metrics.json; returns the metrics."""
    config_lib.validate(config)
    # Name errors surface before anything is written or any data is read.
    method = fit_setup.check_names(config)
    workdir = Workdir(workdir_path)
    # Before any other TensorFlow work: a multi-worker strategy configures the runtime.
    placement = distribute.setup(config)
    jit_compile = runtime.setup(config)
    precision = runtime.precision()
    if config.verbose:
        print(f"Precision: {runtime.describe_precision(config.mixed_precision)}")
        print(f"Distribution: {placement.describe()}")
    info, splits = data_lib.prepare(config)
    if config.verbose:
        print(f"Images: {data_lib.describe_images(info)}")
    warning = data_lib.mismatch_warning(config, info)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    # Refused before the (possibly slow) model build; output_workdir checks again.
    workdir.refuse_if_finished(overwrite)

    # Model, method state, optimizer and metrics belong to the strategy (a no-op scope on
    # the single-device path).
    # Under a strategy only full batches (training/distribute.py); else the last is short.
    steps_per_epoch = fit_setup.steps_per_epoch(config, info,
                                                drop_remainder=placement.distributed)
    with placement.scope():
        model = fit_setup.build_for_fit(config, info, steps_per_epoch,
                                        runtime.resolve_jit_compile(jit_compile, placement),
                                        method)
    # Only the chief writes the workdir; other workers write to a temporary one. Nothing is
    # written before the model and the method (e.g. a KD teacher) built without error.
    out = distribute.output_workdir(placement, workdir, config, overwrite=overwrite,
                                    precision=precision)
    # The policy the run trains under, for reports (runs of different precision are
    # different experiments) and for resuming (under the same policy only); the strategy
    # and this process's part in it, as the last session that trained it ran.
    out.write("data.json", {**info_to_json(info), "runtime": {
        "precision": precision, "distribution": placement.record()}})
    # Every worker resumes from the chief's checkpoints: the newest one that reads back
    # whole. Only the chief moves unreadable ones aside (before its manager reads the
    # state file) and cuts history.csv back to the epoch resumed after.
    latest = resume.newest_readable(workdir.checkpoint_dir, move_aside=out is workdir,
                                    warn=_warn)
    checkpoint, manager, epoch_var = make_checkpoint(model, out)
    start_epoch = 0
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        start_epoch = int(epoch_var.numpy())
        if config.verbose:
            print(f"Resuming {workdir.path} after epoch {start_epoch} of {config.num_epochs}")
    if out is workdir:
        checkpoints.cut_history(out.file("history.csv"), start_epoch)
    distribute.check_agree(placement, start_epoch, "the epoch to resume after")

    if start_epoch < config.num_epochs:
        train_ds, data_steps = distribute.train_dataset(
            placement, config, info, splits["train"], views=method.views,
            start_epoch=start_epoch)
        assert data_steps == steps_per_epoch, (data_steps, steps_per_epoch)
        callbacks = fit_setup.fit_callbacks(config, info, splits, jit_compile, out=out,
                                            checkpoint=(manager, epoch_var))
        model.fit(train_ds, epochs=config.num_epochs, initial_epoch=start_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=[*callbacks, *extra_callbacks],
                  validation_data=fit_setup.validation_data(config, info, splits,
                                                            placement.num_replicas),
                  shuffle=False, verbose=int(config.verbose) and (1 if os.isatty(1) else 2))

    metrics = evaluate_splits(model, config, info, splits, jit_compile)
    if config.verbose and "val" not in splits:
        from cskd_tf.evaluation.calibration import NO_VAL_NOTE
        print(f"Note: {NO_VAL_NOTE}")
    save_keras_model(model, out)
    out.write("metrics.json", metrics)
    distribute.release(placement, out, workdir)
    return metrics


# ------------------------------------------------------------------ the .keras file
KERAS_FILE = "model.keras"


def save_keras_model(model, workdir: Workdir):
    """Writes DIR/model.keras: the trained model, its method and optimizer in one file.

    ``keras.models.load_model(DIR/model.keras)`` (after ``import cskd_tf``) gives the same
    predictions and can continue training; cskd-eval and cskd-export accept its path. It is
    written before metrics.json, so a finished run always has it.
    """
    model.save(workdir.file(KERAS_FILE))


# ---------------------------------------------------------------------------------------
def evaluate_splits(model, config, info, splits, jit_compile=False, pixel_max=1.0):
    """metrics.json: {split: the paper's metrics} for each split of ``config.eval_splits``.

    ``pixel_max``: the model's input value of a full pixel (255.0 for a model trained on
    0..255 images from Python; the pipeline yields [0, 1]).

    Where the run has a val split, temperature scaling (cskd_tf.evaluation.calibration) is
    fitted on val only and adds ``ece_ts``, ``nll_ts`` and ``temperature_ts`` to every
    reported split; val is predicted for that even when it is not reported itself.
    """
    from cskd_tf.evaluation.calibration import FIT_SPLIT, temperature_scaling_metrics
    from cskd_tf.evaluation.metrics import evaluate_predictions
    from cskd_tf.evaluation.inference import logits_and_features

    reported = [name for name in config.eval_splits if name in splits]
    needed = list(reported)
    if FIT_SPLIT in splits and FIT_SPLIT not in reported:
        needed.append(FIT_SPLIT)
    results, arrays = {}, {}
    for name in needed:
        dataset = data_lib.eval_dataset(config, info, splits[name])
        if float(pixel_max) != 1.0:
            dataset = dataset.map(lambda x, y: (x * float(pixel_max), y))
        logits, features, labels = logits_and_features(
            model, dataset, jit_compile,
            verbose=int(config.verbose > 0), label=f"evaluating {name}")
        arrays[name] = (logits, labels)
        if name in reported:
            results[name] = evaluate_predictions(logits, labels, features=features)
            results[name]["num_examples"] = int(labels.shape[0])
    for name, scaled in temperature_scaling_metrics(arrays).items():
        if name in results:
            results[name].update(scaled)
    return results

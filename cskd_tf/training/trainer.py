"""The thin training loop: config → data → model → fit → evaluate.

``train(config, workdir)`` is what ``cskd-train`` runs; ``build_model`` is
shared with restoring a run (training/restore.py: evaluation, export, the KD
teacher) and the tuner so a model is always constructed the same way.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from cskd_tf import config as config_lib
from cskd_tf import data as data_lib
from cskd_tf import losses, models, runtime
from cskd_tf.errors import ConfigError
from cskd_tf.models.cskd_model import CSKDModel
from cskd_tf.training import callbacks as cb
from cskd_tf.training import distribute
from cskd_tf.training.schedules import EpochSchedule
from cskd_tf.training.teacher import teacher_for
from cskd_tf.training.workdir import Workdir


def info_to_json(info) -> dict:
    payload = dataclasses.asdict(info)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in payload.items()}


def build_model(config, num_classes, image_shape, mean, std, method=None):
    """The CSKDModel for a config, built (weights created) but not compiled."""
    method = method or losses.get_method(config.method, config)
    backbone = models.build(config.model, num_classes=num_classes, input_shape=tuple(image_shape),
                            width=int(config.model_width), head=method.head, init=config.init)
    model = CSKDModel(backbone, method=method, mean=mean, std=std,
                       lambda_cls=float(config.lambda_cls),
                       weight_decay=float(config.weight_decay))
    model(tf.zeros((1, *image_shape), tf.float32))
    return model


def make_optimizer(config, steps_per_epoch):
    schedule = EpochSchedule(config.learning_rate, steps_per_epoch, kind=config.lr_schedule,
                             decay_epochs=config.lr_decay_epochs,
                             decay_factor=config.lr_decay_factor,
                             warmup_epochs=config.warmup_epochs, total_epochs=config.num_epochs)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum,
                                nesterov=config.nesterov)


def compile_model(model, config, steps_per_epoch, jit_compile):
    model.compile(optimizer=make_optimizer(config, steps_per_epoch), jit_compile=jit_compile,
                  steps_per_execution=int(config.steps_per_execution))
    # Create the optimizer's slots now so a checkpoint restores into them directly.
    model.optimizer.build(model.trainable_variables)
    return model


def make_checkpoint(model, workdir: Workdir):
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, workdir.checkpoint_dir, max_to_keep=2)
    return checkpoint, manager, epoch


def train(config, workdir_path, overwrite=False, extra_callbacks=()):
    """Trains (or resumes) a run and writes DIR/metrics.json; returns the metrics."""
    config_lib.validate(config)
    # Name errors surface before anything is written or any data is read.
    models.get_spec(config.model)
    method = losses.get_method(config.method, config)
    workdir = Workdir(workdir_path)
    # Before any other TensorFlow work: a multi-worker strategy configures the runtime.
    placement = distribute.setup(config)
    jit_compile = runtime.setup(config)
    info, splits = data_lib.prepare(config)
    # Refused before the (possibly slow) model build; output_workdir checks again.
    workdir.refuse_if_finished(overwrite)

    # Model, method state, optimizer and metrics belong to the strategy (a no-op scope on
    # the single-device path).
    with placement.scope():
        model = build_model(config, info.num_classes, info.image_shape, info.mean, info.std,
                            method)
        method.prepare_training(model, teacher=teacher_for(method, model))
        steps_per_epoch = config.steps_per_epoch or info.splits["train"] // config.batch_size
        if steps_per_epoch < 1:
            raise ConfigError(f"config.batch_size={config.batch_size} is larger than the training "
                              f"split ({info.splits['train']} examples); lower --config.batch_size")
        compile_model(model, config, steps_per_epoch,
                      distribute.resolve_jit_compile(placement, jit_compile))
    # Only the chief writes the workdir; other workers write to a temporary one. Nothing is
    # written before the model and the method (e.g. a KD teacher) built without error.
    out = distribute.output_workdir(placement, workdir, config, overwrite=overwrite)
    out.write("data.json", info_to_json(info))
    checkpoint, manager, epoch_var = make_checkpoint(model, out)
    # Every worker resumes from the chief's checkpoints.
    latest = (manager.latest_checkpoint if out is workdir
              else tf.train.latest_checkpoint(workdir.checkpoint_dir))
    start_epoch = 0
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        start_epoch = int(epoch_var.numpy())
        if config.verbose:
            print(f"Resuming {workdir.path} after epoch {start_epoch} of {config.num_epochs}")
    distribute.check_agree(placement, start_epoch, "the epoch to resume after")

    if start_epoch < config.num_epochs:
        train_ds, data_steps = distribute.train_dataset(
            placement, config, info, splits["train"], views=method.views,
            start_epoch=start_epoch)
        assert data_steps == steps_per_epoch, (data_steps, steps_per_epoch)
        val_ds = data_lib.eval_dataset(config, info, splits["val"]) if "val" in splits else None
        # The paper protocol logs test metrics every epoch (the reference code reports the
        # best of them); under tune the test split stays untouched until the end.
        per_epoch_test = (
            [cb.SplitMetricsLogger(data_lib.eval_dataset(config, info, splits["test"]),
                                   prefix="test", jit_compile=jit_compile)]
            if config.protocol == "paper" and "test" in splits else [])
        callbacks = [
            cb.NonFiniteLossGuard(),
            cb.LearningRateLogger(),
            cb.CSKDCallback(val_ds, lambda_cls=float(config.lambda_cls),
                            temperature=float(config.temperature),
                            lambda_warmup_epochs=config.lambda_warmup_epochs,
                            jit_compile=jit_compile),
            *per_epoch_test,
            # Logs before the checkpoint: a kill between the two then repeats a history row
            # on resume instead of losing one.
            cb.HistoryCSVLogger(out.file("history.csv"), append=True),
            keras.callbacks.TensorBoard(out.file("tensorboard"), write_graph=False,
                                        profile_batch=0),
            cb.EpochCheckpoint(manager, epoch_var, every=config.checkpoint_every_epochs),
            *extra_callbacks,
        ]
        model.fit(train_ds, epochs=config.num_epochs, initial_epoch=start_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks, shuffle=False,
                  verbose=int(config.verbose) and (1 if os.isatty(1) else 2))

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
def evaluate_splits(model, config, info, splits, jit_compile=False):
    """metrics.json: {split: the paper's metrics} for each split of ``config.eval_splits``.

    Where the run has a val split, temperature scaling (cskd_tf.evaluation.calibration) is
    fitted on val only and adds ``ece_ts``, ``nll_ts`` and ``temperature_ts`` to every
    reported split; val is predicted for that even when it is not reported itself.
    """
    from cskd_tf.evaluation.calibration import FIT_SPLIT, temperature_scaling_metrics
    from cskd_tf.evaluation.metrics import evaluate_predictions
    from cskd_tf.evaluation.predict import predict

    reported = [name for name in config.eval_splits if name in splits]
    needed = list(reported)
    if FIT_SPLIT in splits and FIT_SPLIT not in reported:
        needed.append(FIT_SPLIT)
    results, arrays = {}, {}
    for name in needed:
        logits, features, labels = predict(
            model, data_lib.eval_dataset(config, info, splits[name]), jit_compile,
            verbose=int(config.verbose > 0), label=f"evaluating {name}")
        arrays[name] = (logits, labels)
        if name in reported:
            results[name] = evaluate_predictions(logits, labels, features=features)
            results[name]["num_examples"] = int(labels.shape[0])
    for name, scaled in temperature_scaling_metrics(arrays).items():
        if name in results:
            results[name].update(scaled)
    return results

"""The one fit set-up of ``cskd-train`` (training/trainer.py) and the tuner (tuning/hypermodel.py).

Both train the same way, so both call these in this order:

1. :func:`check_names`: the model and method names, as one-line errors before any data is
   read or anything is written.
2. :func:`steps_per_epoch`: ``config.steps_per_epoch`` or one pass over the training split
   (its last batch short); ConfigError when dropping the remainder leaves no batch.
3. :func:`build_for_fit`: the CSKDModel (:func:`build_model`), synchronized batch norm when
   ``config.sync_batch_norm``, the method's training state (e.g. a KD teacher) and the
   compiled optimizer (:func:`compile_model`), inside the strategy's scope.
4. :func:`fit_callbacks`: the callback list, always in the order NaN guard, learning rate,
   λ warm-up (logs λ and T), per-epoch test metrics (``protocol=paper`` only), the caller's
   readers of the logs (the tuner's derived objectives), then the writers of a workdir
   (history.csv, TensorBoard, checkpoint) when one is given; and :func:`validation_data`,
   the val split fit scores itself with the compiled metrics.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cskd_tf import data as data_lib
from cskd_tf import losses, models
from cskd_tf.errors import ConfigError
from cskd_tf.evaluation.streaming import (ExpectedCalibrationError, NegativeLogLikelihood,
                                          RecallAtK)
from cskd_tf.models.compile_args import evaluation_only
from cskd_tf.training import callbacks as cb
from cskd_tf.training import distribute
from cskd_tf.training.build import build_model
from cskd_tf.training.schedules import EpochSchedule
from cskd_tf.training.teacher import teacher_for


def check_names(config):
    """The config's method (a fresh instance); ModelError/ConfigError for unknown names."""
    models.get_spec(config.model)
    return losses.get_method(config.method, config)


def steps_per_epoch(config, info, drop_remainder=False) -> int:
    """Optimizer steps per epoch: ``config.steps_per_epoch``, else ⌈train examples / batch⌉
    (the last batch short: every example an anchor once per epoch, as the reference's
    DataLoader), or ⌊train examples / batch⌋ with ``drop_remainder`` (multi-replica
    training, see training/distribute.py)."""
    count, batch = int(info.splits["train"]), int(config.batch_size)
    steps = config.steps_per_epoch or (count // batch if drop_remainder else -(-count // batch))
    if steps < 1:
        raise ConfigError(f"config.batch_size={config.batch_size} is larger than the training "
                          f"split ({info.splits['train']} examples); lower --config.batch_size")
    return int(steps)


def make_optimizer(config, steps):
    schedule = EpochSchedule(config.learning_rate, steps, kind=config.lr_schedule,
                             decay_epochs=config.lr_decay_epochs,
                             decay_factor=config.lr_decay_factor,
                             warmup_epochs=config.warmup_epochs, total_epochs=config.num_epochs)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum,
                                nesterov=config.nesterov)


def reported_metrics():
    """What cskd-train reports each epoch: accuracy and top-5 (training and validation), and
    ECE, NLL and Recall@1 of fit's validation pass (``val_ece``, ``val_nll``,
    ``val_recall_at_1``; evaluation only, so the training logs stay loss, terms, accuracy)."""
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
            evaluation_only(ExpectedCalibrationError()),
            evaluation_only(NegativeLogLikelihood()),
            RecallAtK(k=1)]


def compile_model(model, config, steps, jit_compile):
    # Weighted: the padding rows of a multi-replica validation pass weigh 0 (see
    # validation_data); training batches carry no weights, so nothing else changes.
    model.compile(optimizer=make_optimizer(config, steps), weighted_metrics=reported_metrics(),
                  jit_compile=jit_compile, steps_per_execution=int(config.steps_per_execution))
    # Create the optimizer's slots now so a checkpoint restores into them directly.
    model.optimizer.build(model.trainable_variables)
    return model


def build_for_fit(config, info, steps, jit_compile, method=None):
    """The compiled CSKDModel ready for ``model.fit``; call it inside the strategy's scope.

    ``jit_compile`` is what the model compiles with (the trainer passes it through
    :func:`cskd_tf.runtime.resolve_jit_compile` with the run's placement).
    """
    method = method or losses.get_method(config.method, config)
    model = build_model(config, info.num_classes, info.image_shape, info.mean, info.std, method,
                        class_names=info.class_names)
    if config.sync_batch_norm and not distribute.sync_batch_norm(model):
        raise ConfigError(f"config.sync_batch_norm=True but model {config.model!r} has no "
                          "BatchNormalization layer; drop --config.sync_batch_norm")
    method.prepare_training(model, teacher=teacher_for(method, model))
    return compile_model(model, config, steps, jit_compile)


def validation_data(config, info, splits, replicas=1):
    """The val split as ``model.fit(validation_data=...)`` takes it, or None without one.

    fit's own validation pass scores it every epoch with the compiled metrics
    (:func:`reported_metrics`): ``val_loss``, ``val_accuracy``, ``val_ece``, ... Under
    ``replicas`` > 1 every batch is padded to a multiple of the replica count with copies
    of its first example weighted 0 (the reported metrics are weighted, so they do not
    count them): a last batch smaller than the replica count would leave a replica an empty
    slice, on which TensorFlow's CPU convolutions fail.
    """
    if "val" not in splits:
        return None
    batches = -(-int(info.splits["val"]) // int(config.eval_batch_size))
    # The number of batches, stated: Keras otherwise learns it by running out of data, with
    # a warning every run.
    dataset = data_lib.eval_dataset(config, info, splits["val"]).apply(
        tf.data.experimental.assert_cardinality(batches))
    if replicas <= 1:
        return dataset

    def pad(images, labels):
        count = tf.shape(labels)[0]
        extra = (-count) % replicas
        rows = tf.concat([tf.range(count), tf.zeros([extra], tf.int32)], axis=0)
        weights = tf.concat([tf.ones([count]), tf.zeros([extra])], axis=0)
        return tf.gather(images, rows), tf.gather(labels, rows), weights

    return dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def fit_callbacks(config, info, splits, jit_compile, readers=(), out=None, checkpoint=None):
    """The project's callbacks for ``model.fit``, in the order the module docstring gives.

    Args:
      config: the run's config (λ warm-up, protocol, checkpoint interval).
      info, splits: the prepared dataset (``data.prepare``). The test split is scored every
        epoch only under ``config.protocol="paper"`` (the reference code reports the best
        epoch); under tune it stays untouched until the end. The val split is fit's own
        (:func:`validation_data`).
      jit_compile: whether the evaluation passes run under XLA.
      readers: callbacks that read the metrics the earlier ones logged.
      out: the Workdir to write history.csv and TensorBoard logs to, or None.
      checkpoint: ``(manager, epoch_variable)`` saved every
        ``config.checkpoint_every_epochs`` epochs, or None.
    """
    callbacks = [
        cb.NonFiniteLossGuard(),
        cb.LearningRateLogger(),
        # Warms up the method's λ and logs the λ and T the epoch trained with.
        cb.LambdaWarmup(lambda_warmup_epochs=config.lambda_warmup_epochs),
    ]
    if config.protocol == "paper" and "test" in splits:
        callbacks.append(cb.SplitMetricsLogger(data_lib.eval_dataset(config, info, splits["test"]),
                                               prefix="test", jit_compile=jit_compile))
    callbacks.extend(readers)
    if out is not None:
        callbacks += [
            # Logs before the checkpoint: a kill between the two leaves a row that the
            # resumed run drops and writes again (training/resume.py) instead of losing one.
            cb.HistoryCSVLogger(out.file("history.csv"), append=True),
            keras.callbacks.TensorBoard(out.file("tensorboard"), write_graph=False,
                                        profile_batch=0),
        ]
    if checkpoint is not None:
        manager, epoch_variable = checkpoint
        callbacks.append(cb.EpochCheckpoint(manager, epoch_variable,
                                            every=config.checkpoint_every_epochs))
    return callbacks

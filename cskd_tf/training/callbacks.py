"""Callbacks that users add to ``model.fit`` (CSKDCallback) and that the
trainer adds for checkpoints, NaN detection and learning-rate logging."""

from __future__ import annotations

import math

import keras
import numpy as np

from cskd_tf.errors import NonFiniteLossError


class CSKDCallback(keras.callbacks.Callback):
    """Logs λ and T, warms λ up, and scores the validation split each epoch.

    At the end of every ``eval_every``-th epoch (and the last one) it runs the
    model over ``validation_data`` once and writes into the epoch logs, where
    TensorBoard, CSVLogger, EarlyStopping and Keras Tuner see them:
    ``val_loss`` (= NLL), ``val_accuracy``, ``val_top5_accuracy``, ``val_ece``,
    ``val_nll`` and ``val_recall_at_1`` (fractions, nats for NLL).

    λ warm-up: with ``lambda_warmup_epochs = W > 0``, λ at epoch e (0-based)
    is λ · min(1, (e + 1) / W); the value lives in ``model.lambda_cls``.
    """

    def __init__(self, validation_data=None, lambda_cls=None, temperature=None,
                 lambda_warmup_epochs=0, eval_every=1, num_bins=15, jit_compile=False):
        super().__init__()
        self.validation_data = validation_data
        self.lambda_cls = lambda_cls
        self.temperature = temperature
        self.lambda_warmup_epochs = int(lambda_warmup_epochs)
        self.eval_every = max(int(eval_every), 1)
        self.num_bins = num_bins
        self.jit_compile = jit_compile
        self.last_metrics = None

    def on_train_begin(self, logs=None):
        if self.lambda_cls is None:
            self.lambda_cls = float(self.model.lambda_cls.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        if self.lambda_warmup_epochs > 0:
            factor = min(1.0, (epoch + 1) / self.lambda_warmup_epochs)
            self.model.lambda_cls.assign(self.lambda_cls * factor)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["lambda_cls"] = float(self.model.lambda_cls.numpy())
        if self.temperature is not None:
            logs["temperature"] = float(self.temperature)
        last = self.params.get("epochs") if self.params else None
        due = (epoch + 1) % self.eval_every == 0 or (last is not None and epoch + 1 == last)
        if self.validation_data is None or not due:
            return
        from cskd_tf.evaluation.predict import evaluate

        result = evaluate(self.model, self.validation_data, self.jit_compile, self.num_bins,
                          verbose=0)  # Keras' own progress bar owns the terminal here
        self.last_metrics = result
        log_split_metrics(logs, "val", result)


def log_split_metrics(logs, prefix, result):
    """Writes an evaluation result (percent errors, as metrics.json) into epoch logs as
    fractions: ``{prefix}_loss`` (= NLL), ``_nll``, ``_accuracy``, ``_top5_accuracy``,
    ``_ece`` and, when computed, ``_recall_at_1``."""
    logs[f"{prefix}_loss"] = result["nll"]
    logs[f"{prefix}_nll"] = result["nll"]
    logs[f"{prefix}_accuracy"] = 1.0 - result["top1_error"] / 100.0
    logs[f"{prefix}_top5_accuracy"] = 1.0 - result["top5_error"] / 100.0
    logs[f"{prefix}_ece"] = result["ece"] / 100.0
    if result.get("recall_at_1") is not None:
        logs[f"{prefix}_recall_at_1"] = result["recall_at_1"] / 100.0


class SplitMetricsLogger(keras.callbacks.Callback):
    """Scores one more split (the test split under ``config.protocol="paper"``) every epoch.

    One silent pass over ``dataset`` at each epoch end writes ``test_loss``, ``test_nll``,
    ``test_accuracy``, ``test_top5_accuracy`` and ``test_ece`` (for ``prefix="test"``) into
    the epoch logs, so history.csv holds them and ``cskd-report
    --selection=best_test_epoch`` can pick the best epoch as the reference code
    (alinlab/cs-kd train.py) did. Recall@1 is left out: its all-pairs similarity would
    cost more than the pass itself on large test sets.
    """

    def __init__(self, dataset, prefix="test", jit_compile=False, num_bins=15):
        super().__init__()
        self.dataset = dataset
        self.prefix = prefix
        self.jit_compile = jit_compile
        self.num_bins = num_bins

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        from cskd_tf.evaluation.metrics import evaluate_predictions
        from cskd_tf.evaluation.predict import predict

        logits, _, labels = predict(self.model, self.dataset, self.jit_compile)
        log_split_metrics(logs, self.prefix,
                          evaluate_predictions(logits, labels, num_bins=self.num_bins))


class HistoryCSVLogger(keras.callbacks.CSVLogger):
    """keras.callbacks.CSVLogger whose columns are exactly the first epoch's log keys.

    Keras adds an ``NA`` column ``val_<key>`` for every key when no ``val_`` key is logged,
    which a run without a val split (``config.protocol="paper"``) would fill with columns
    such as ``val_test_accuracy``.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and logs:
            self.keys = sorted(logs.keys())
        super().on_epoch_end(epoch, logs)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate of the epoch's last step as ``lr``.

    ``optimizer.learning_rate`` evaluates a schedule at the *next* step, which
    after the last step of an epoch is already the next epoch's rate.
    """

    def on_train_begin(self, logs=None):
        # The schedule itself, rebuilt from the optimizer's public config (the optimizer
        # keeps it in a private attribute).
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        rate = optimizer.get_config().get("learning_rate")
        self._schedule = (keras.optimizers.schedules.deserialize(rate)
                          if isinstance(rate, dict) else None)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        schedule = getattr(self, "_schedule", None)
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            last_step = max(int(optimizer.iterations.numpy()) - 1, 0)
            logs["lr"] = float(np.asarray(schedule(last_step)))
        else:
            logs["lr"] = float(np.asarray(optimizer.learning_rate))


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training with NonFiniteLossError naming the epoch and step."""

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is None:
            return
        value = float(np.asarray(value))
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {self._epoch + 1}, step {batch + 1}; "
                "lower --config.learning_rate or --config.lambda_cls (the last checkpoint is kept)")


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer and the completed-epoch counter after each epoch."""

    def __init__(self, manager, epoch_variable, every=1):
        super().__init__()
        self.manager = manager
        self.epoch_variable = epoch_variable
        self.every = max(int(every), 1)

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every == 0 or epoch + 1 == last:
            self.epoch_variable.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)

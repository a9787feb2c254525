"""Callbacks that users add to ``model.fit`` (CSKDCallback: the λ warm-up) and that the fit
set-up (training/fit_setup.py) adds for per-epoch test scores, checkpoints, NaN detection and
learning-rate logging. Validation metrics are fit's own (``validation_data=`` and the compiled
metrics); no callback here writes a ``val_*`` value."""

from __future__ import annotations

import math

import keras
import numpy as np

from cskd_tf.errors import ModelError, NonFiniteLossError


class LambdaWarmup(keras.callbacks.Callback):
    """Warms the method's λ up and logs the λ and T the epoch trained with.

    With ``lambda_warmup_epochs = W > 0``, λ at epoch e (0-based) is
    λ · min(1, (e + 1) / W), λ the method's ``weight``; the value goes into the method's
    ``lambda_cls`` variable. Every epoch end writes ``lambda_cls`` (the variable) and
    ``temperature`` into the logs, for methods that have them (CS-KD and its
    combinations); other methods are left alone.
    """

    def __init__(self, lambda_warmup_epochs=0):
        super().__init__()
        if not isinstance(lambda_warmup_epochs, (int, np.integer)) or lambda_warmup_epochs < 0:
            raise ModelError(
                f"lambda_warmup_epochs={lambda_warmup_epochs!r} is not a number of epochs >= 0 "
                "(validation is fit's own now: pass validation_data= to fit and compile "
                "ExpectedCalibrationError/NegativeLogLikelihood/RecallAtK as metrics)")
        self.lambda_warmup_epochs = int(lambda_warmup_epochs)

    def _method(self):
        return getattr(self.model, "method", None)

    def on_epoch_begin(self, epoch, logs=None):
        variable = getattr(self._method(), "lambda_cls", None)
        if self.lambda_warmup_epochs > 0 and variable is not None:
            factor = min(1.0, (epoch + 1) / self.lambda_warmup_epochs)
            variable.assign(self._method().weight * factor)

    def on_epoch_end(self, epoch, logs=None):
        method = self._method()
        if logs is None or method is None:
            return
        if getattr(method, "lambda_cls", None) is not None:
            logs["lambda_cls"] = float(keras.ops.convert_to_numpy(method.lambda_cls))
        if getattr(method, "temperature", None) is not None:
            logs["temperature"] = float(method.temperature)


class CSKDCallback(LambdaWarmup):
    """The callback for ``model.fit`` of a CSKDModel: the method's λ warm-up over
    ``lambda_warmup_epochs`` and λ, T in the logs (see :class:`LambdaWarmup`)."""


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


class SplitMetrics(keras.callbacks.Callback):
    """Scores one split at epoch ends and writes the paper's metrics into the epoch logs.

    At the end of every ``eval_every``-th epoch (and the last one) one silent pass over
    ``dataset`` writes ``{prefix}_loss`` (= NLL), ``_accuracy``, ``_top5_accuracy``,
    ``_ece``, ``_nll`` and, with ``recall``, ``_recall_at_1`` (fractions, nats for NLL),
    where TensorBoard, CSVLogger, EarlyStopping and Keras Tuner see them.
    ``dataset=None`` logs nothing.
    """

    def __init__(self, dataset, prefix="val", recall=True, eval_every=1, num_bins=15,
                 jit_compile=False):
        super().__init__()
        self.dataset = dataset
        self.prefix = prefix
        self.recall = bool(recall)
        self.eval_every = max(int(eval_every), 1)
        self.num_bins = num_bins
        self.jit_compile = jit_compile

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        due = (epoch + 1) % self.eval_every == 0 or (last is not None and epoch + 1 == last)
        if logs is None or self.dataset is None or not due:
            return
        from cskd_tf.evaluation.metrics import evaluate_predictions
        from cskd_tf.evaluation.inference import logits_and_features

        # verbose=0: Keras' own progress bar owns the terminal here.
        logits, features, labels = logits_and_features(self.model, self.dataset, self.jit_compile)
        log_split_metrics(logs, self.prefix, evaluate_predictions(
            logits, labels, features=features if self.recall else None,
            num_bins=self.num_bins))


class SplitMetricsLogger(SplitMetrics):
    """Scores one more split (the test split under ``config.protocol="paper"``) every epoch.

    Writes ``test_loss``, ``test_nll``, ``test_accuracy``, ``test_top5_accuracy`` and
    ``test_ece`` (for ``prefix="test"``), so history.csv holds them and ``cskd-report
    --selection=best_test_epoch`` can pick the best epoch as the reference code
    (alinlab/cs-kd train.py) did. Recall@1 is left out: its all-pairs similarity would
    cost more than the pass itself on large test sets.
    """

    def __init__(self, dataset, prefix="test", jit_compile=False, num_bins=15):
        super().__init__(dataset, prefix=prefix, recall=False, num_bins=num_bins,
                         jit_compile=jit_compile)


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


class NonFiniteLossGuard(keras.callbacks.TerminateOnNaN):
    """keras.callbacks.TerminateOnNaN that raises NonFiniteLossError naming the epoch and step.

    Raising (Keras' ``raise_error=True`` behaviour) rather than stopping keeps the later
    callbacks from checkpointing or logging the diverged epoch; the typed error is what
    the CLI prints as one line and what the tuner records as a failed trial.
    """

    def __init__(self):
        super().__init__(raise_error=True)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is None:
            return
        value = float(np.asarray(value))
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {self._epoch + 1}, step {batch + 1}; "
                "lower --config.learning_rate or --config.lambda_cls (the last checkpoint is kept)")

    def on_epoch_end(self, epoch, logs=None):
        # The last update of an epoch can blow up after its loss was logged; fit's own
        # validation pass then sees the diverged model.
        value = (logs or {}).get("val_loss")
        if value is not None and not math.isfinite(float(np.asarray(value))):
            raise NonFiniteLossError(
                f"the validation loss became {float(np.asarray(value))} after epoch {epoch + 1}: "
                "the model diverged; lower --config.learning_rate or --config.lambda_cls (the "
                "last checkpoint is kept)")


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

"""The Keras Tuner HyperModel of CS-KD: one trial = the trainer's model, data and callbacks.

``build(hp)`` makes exactly the model ``cskd-train`` would make from the
config with the trial's λ, T (and learning rate, weight decay) filled in;
``fit`` trains it on the project's pair pipeline with the project's
callbacks (both from cskd_tf/training/fit_setup.py, as in cskd-train) and
returns the metrics of the last epoch on the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import keras_tuner
import tensorflow as tf

from cskd_tf import data as data_lib
from cskd_tf import runtime
from cskd_tf.errors import ConfigError, NonFiniteLossError
from cskd_tf.training import fit_setup
from cskd_tf.tuning.space import SearchSpace, add_derived_metrics

# Epoch-log keys reported under another name: they are what the trial really trained with
# (the method's λ variable, the T the loss read), next to the hyperparameter values of the
# same name in the trial table.
_USED = {"lambda_cls": "used_lambda_cls", "temperature": "used_temperature"}


@dataclass
class TrialData:
    """The prepared dataset every trial of one process shares (built once, not per trial)."""

    info: data_lib.DatasetInfo
    splits: dict
    steps_per_epoch: int
    jit_compile: bool

    @classmethod
    def prepare(cls, config):
        """Builds or reuses the shard cache; ConfigError when there is no validation split."""
        # Name errors now, as one line, rather than as the same failure in every trial.
        fit_setup.check_names(config)
        jit_compile = runtime.setup(config)
        info, splits = data_lib.prepare(config)
        if "val" not in splits:
            raise ConfigError(
                f"dataset {config.dataset!r} has no validation split for the tuner's objective; "
                "set --config.protocol=tune (protocol=paper has no val split) and "
                "--config.val_fraction > 0 to hold one out of train (the test split is "
                "never used for tuning)")
        return cls(info=info, splits=splits,
                   steps_per_epoch=fit_setup.steps_per_epoch(config, info),
                   jit_compile=jit_compile)


class DerivedMetrics(keras.callbacks.Callback):
    """Adds combined objectives (val_error_plus_ece) to the epoch logs.

    fit's validation pass has written the val_* metrics into the logs before any callback's
    epoch end; listed before the writers, so TensorBoard and CSVLogger see the combined value.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            add_derived_metrics(logs)


class CSKDHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial's CSKDModel from the config and the trial's values.

    Args:
      space: the :class:`SearchSpace` of the search (it holds the base config).
      data: the :class:`TrialData` to train on; ``None`` in a process that only
        declares the space (the distributed chief), where ``build`` is never called.
    """

    def __init__(self, space: SearchSpace, data: TrialData | None = None):
        super().__init__(name="cskd", tunable=True)
        self.space = space
        self.data = data
        # True while the Tuner discovers the space: Keras Tuner calls build(hp) for that
        # at start-up, and the space is fully declared by the config (see build).
        self.declaring_only = False

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def trial_config(self, hp):
        """The full config of a trial: the base config with this trial's values."""
        return self.space.trial_config(self.space.declare(hp))

    def build(self, hp):
        if self.declaring_only:
            # No model: the chief has no data, and a worker would spend seconds on a
            # model nobody trains. Declaring the values is all the discovery needs.
            self.declare_hyperparameters(hp)
            return None
        if self.data is None:
            raise RuntimeError("CSKDHyperModel.build needs TrialData (the chief builds no model)")
        config = self.trial_config(hp)
        # Same seed in every trial: the same initial weights and batch order, so trials
        # differ only by their hyperparameters.
        runtime.setup(config)
        return fit_setup.build_for_fit(config, self.data.info, self.data.steps_per_epoch,
                                       self.data.jit_compile)

    def fit(self, hp, model, epochs=None, initial_epoch=0, callbacks=(), **kwargs):
        """Trains epochs ``initial_epoch .. epochs - 1``; returns the last epoch's metrics.

        The last epoch, not the best one, because cskd-train keeps the last weights: a
        trial is scored as the run its hyperparameters would give when retrained.
        Raises NonFiniteLossError when training diverges: a NaN/Inf loss (from
        NonFiniteLossGuard) or NaN/Inf outputs on the validation split.
        """
        del kwargs  # Keras Tuner passes nothing else; accepted for its signature
        config = self.trial_config(hp)
        epochs = int(epochs or config.num_epochs)
        info, splits = self.data.info, self.data.splits
        train_ds, steps = data_lib.train_dataset(config, info, splits["train"],
                                                 views=model.method.views,
                                                 start_epoch=int(initial_epoch))
        # The trainer's callbacks (no workdir: the tuner keeps its own trial records), and
        # the combined objectives right after the validation metrics they combine. The
        # test split is left out: it is never looked at while tuning.
        project_callbacks = fit_setup.fit_callbacks(
            config, info, {name: split for name, split in splits.items() if name != "test"},
            self.data.jit_compile, readers=[DerivedMetrics()])
        try:
            history = model.fit(train_ds, epochs=epochs, initial_epoch=int(initial_epoch),
                                steps_per_epoch=steps,
                                validation_data=fit_setup.validation_data(config, info, splits),
                                callbacks=project_callbacks + list(callbacks),
                                shuffle=False, verbose=2 if config.verbose else 0)
        except ValueError as error:
            # NonFiniteLossGuard sees each step's loss, which can still be finite when the
            # epoch's last update is the one that blows up (common at extreme λ); the
            # validation pass then fails on NaN logits. Report that as the divergence it is.
            if _outputs_not_finite(model, data_lib.eval_dataset(config, info, splits["val"])):
                raise NonFiniteLossError(
                    "the model diverged: its outputs on the validation split are NaN or "
                    f"infinite ({error})") from error
            raise
        results = {_USED.get(name, name): float(values[-1])
                   for name, values in history.history.items() if values}
        results["epochs"] = float(epochs)
        return results


def _outputs_not_finite(model, dataset) -> bool:
    """Whether the model's logits on the first batch of ``dataset`` hold NaN or inf."""
    for images, _ in dataset.take(1):
        logits = model(images, training=False)
        return not bool(tf.reduce_all(tf.math.is_finite(tf.cast(logits, tf.float32))))
    return False

"""Learning-rate schedules indexed by optimizer step, so a resumed run continues
exactly where it stopped (the step counter is part of the checkpoint)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="cskd_tf")
class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then a step, cosine or constant schedule over epochs.

    step:     lr = base · factor^(number of decay epochs ≤ epoch)
    cosine:   lr = base · ½(1 + cos(π · progress))
    constant: lr = base

    ``epoch`` is the fractional epoch step / steps_per_epoch, so a decay epoch e (0-based)
    is the first epoch trained at the lower rate: the rate drops at its first step.

    The reference code (alinlab/cs-kd train.py:216-231) calls ``adjust_learning_rate(epoch)``
    *after* training and evaluating epoch ``epoch``, setting base·0.1^([epoch ≥ E/2] +
    [epoch ≥ 3E/4]); epoch e therefore trains at the rate set after epoch e−1, and the first
    decayed epochs are ⌈E/2⌉+1 and ⌈3E/4⌉+1: for E = 200, decay_epochs = (101, 151), i.e.
    101 epochs at 0.1, 50 at 0.01 and 49 at 0.001 (see
    :func:`cskd_tf.recipes.reference_decay_epochs`).
    """

    def __init__(self, base_lr, steps_per_epoch, kind="step", decay_epochs=(),
                 decay_factor=0.1, warmup_epochs=0, total_epochs=1):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.kind = kind
        self.decay_epochs = tuple(int(e) for e in decay_epochs)
        self.decay_factor = float(decay_factor)
        self.warmup_epochs = float(warmup_epochs)
        self.total_epochs = int(total_epochs)

    def __call__(self, step):
        epoch = tf.cast(step, tf.float32) / float(self.steps_per_epoch)
        whole_epoch = tf.floor(epoch)
        if self.kind == "step":
            passed = tf.add_n([tf.cast(whole_epoch >= e, tf.float32) for e in self.decay_epochs]
                              or [tf.constant(0.0)])
            lr = self.base_lr * tf.pow(self.decay_factor, passed)
        elif self.kind == "cosine":
            progress = tf.clip_by_value(
                (epoch - self.warmup_epochs) / max(self.total_epochs - self.warmup_epochs, 1e-8),
                0.0, 1.0)
            lr = self.base_lr * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            lr = tf.constant(self.base_lr)
        if self.warmup_epochs > 0:
            warm = tf.minimum(1.0, (epoch + 1.0 / self.steps_per_epoch) / self.warmup_epochs)
            lr = lr * warm
        return lr

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "kind": self.kind, "decay_epochs": self.decay_epochs,
                "decay_factor": self.decay_factor, "warmup_epochs": self.warmup_epochs,
                "total_epochs": self.total_epochs}


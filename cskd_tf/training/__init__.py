"""Fit-loop wiring: the trainer, its fit set-up, callbacks, schedules and checkpoints."""

from cskd_tf.training.callbacks import (CSKDCallback, EpochCheckpoint, LambdaWarmup,
                                        LearningRateLogger, NonFiniteLossGuard)
from cskd_tf.training.schedules import EpochSchedule

__all__ = ["CSKDCallback", "EpochCheckpoint", "EpochSchedule", "LambdaWarmup",
           "LearningRateLogger", "NonFiniteLossGuard"]

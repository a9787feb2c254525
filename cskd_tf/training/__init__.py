"""Fit-loop wiring: the trainer, callbacks, schedules and checkpoints."""

from cskd_tf.training.callbacks import (CSKDCallback, EpochCheckpoint, LearningRateLogger,
                                        NonFiniteLossGuard)
from cskd_tf.training.schedules import EpochSchedule

__all__ = ["CSKDCallback", "EpochCheckpoint", "EpochSchedule", "LearningRateLogger",
           "NonFiniteLossGuard"]

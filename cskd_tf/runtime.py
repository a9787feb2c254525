"""Process-wide settings a run needs before any model exists.

Low in the stack (it imports only :mod:`cskd_tf.errors`) so that training,
evaluation (the speed benchmark) and the command-line tools share one
``gpu_present`` and one ``setup`` without importing each other.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from cskd_tf.errors import ConfigError


def gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_jit_compile(setting: str) -> bool:
    """``auto`` turns XLA on only where a GPU is present.

    On the 2-core CPU machines this project is developed on, XLA made a
    ResNet-18 train step about 2x slower than plain graph mode.
    """
    if setting == "auto":
        return gpu_present()
    return setting == "on"


def setup(config) -> bool:
    """Seeds, determinism and precision policy; returns whether to use XLA."""
    keras.utils.set_random_seed(int(config.seed))
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = config.mixed_precision or "float32"
    if policy == "mixed_float16" and not gpu_present():
        raise ConfigError("config.mixed_precision='mixed_float16' needs a GPU; use "
                          "'mixed_bfloat16' on CPU or leave it empty")
    keras.mixed_precision.set_global_policy(policy)
    # Keep TensorFlow's C++ log chatter out of the CLI's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return resolve_jit_compile(config.jit_compile)

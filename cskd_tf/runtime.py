"""Process-wide settings a run needs before any model exists.

Low in the stack (it imports only :mod:`cskd_tf.errors`) so that
training, evaluation, the command-line tools and benchmarks/ share one
``gpu_present`` and one ``setup`` without importing each other.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from cskd_tf.errors import ConfigError

# ``config.mixed_precision="auto"`` takes this environment variable's policy when it is set,
# like ``cache_dir=""`` takes $CSKD_CACHE_DIR: one machine or one test session can pin a
# precision without editing configs. An explicit config value wins over it.
PRECISION_ENV = "CSKD_PRECISION"
# /proc/cpuinfo flags of x86 CPUs with bfloat16 arithmetic in hardware: AVX512-BF16 dot
# products (Cooper Lake, Zen 4 and later) or AMX-BF16 tile matrix multiplies (Sapphire
# Rapids and later). Without them TensorFlow emulates bfloat16 and it is slower than float32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The Keras policies a run may use (config.mixed_precision also takes "auto" and "").
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_jit_compile(setting, placement=None) -> bool:
    """The ``jit_compile`` to give ``model.compile``.

    ``setting`` is ``config.jit_compile`` ("auto", "on", "off") or an already resolved
    bool; ``auto`` turns XLA on only where a GPU is present: on a CPU, XLA compiles this
    project's train steps into slower code than TensorFlow's plain graph mode.

    ``placement`` (a :class:`cskd_tf.training.distribute.Placement`; None = the single
    device) matters only under a ``tf.distribute`` strategy. Keras 3 compiles its whole
    step function, ``strategy.run`` and the cross-replica gradient merge included, which
    XLA rejects for multi-replica strategies (keras-team/keras#19005, #20763); there XLA is
    applied by auto-clustering instead (compiling the clusters it can, which on CPU is none
    unless ``TF_XLA_FLAGS=--tf_xla_cpu_global_jit``) and this returns False. TPUStrategy
    always compiles with XLA, so False there too.
    """
    if isinstance(setting, bool):
        jit_compile = setting
    elif setting == "auto":
        jit_compile = gpu_present()
    else:
        jit_compile = setting == "on"
    if placement is None or not placement.distributed:
        return jit_compile
    if placement.kind == "tpu":
        return False
    if jit_compile and placement.num_replicas > 1:
        tf.config.optimizer.set_jit("autoclustering")
        return False
    return jit_compile


def cpu_flags() -> frozenset:
    """The CPU feature flags Linux lists in /proc/cpuinfo; empty where there is no such file."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16_flags() -> tuple:
    """Which of :data:`NATIVE_BF16_FLAGS` this CPU has (empty: no bfloat16 hardware)."""
    flags = cpu_flags()
    return tuple(flag for flag in NATIVE_BF16_FLAGS if flag in flags)


def resolve_precision(setting: str) -> str:
    """The Keras dtype policy ``config.mixed_precision = setting`` runs under.

    * ``float32`` (or ``""``, its alias from before ``auto`` existed), ``mixed_bfloat16``,
      ``mixed_float16``: that policy, on any machine.
    * ``auto``: ``$CSKD_PRECISION`` if set; else ``mixed_bfloat16`` when no GPU is present
      and the CPU computes bfloat16 natively (Linux /proc/cpuinfo lists ``avx512_bf16`` or
      ``amx_bf16``); else ``float32``. With a GPU ``auto`` stays float32: bfloat16 and
      float16 were only measured on CPU in this project, not on a GPU.

    Under a mixed policy the layers compute in 16 bits with float32 weights; the heads'
    logits and features, batch-norm statistics and every loss term stay in float32
    (cskd_tf/models/heads.py, Keras' BatchNormalization, cskd_tf/losses/).
    """
    return _resolve(setting)[0]


def describe_precision(setting: str) -> str:
    """One line saying which policy ``setting`` resolves to here, and why."""
    policy, reason = _resolve(setting)
    return f"{policy} ({reason})"


def _resolve(setting):
    """(policy, the reason in words) for a ``config.mixed_precision`` value."""
    if setting != "auto":
        # "" is float32's alias (cskd_tf.config.fixed_precision).
        return setting or "float32", f"config.mixed_precision={setting!r}"
    override = os.environ.get(PRECISION_ENV, "")
    if override:
        if override not in POLICIES:
            raise ConfigError(f"${PRECISION_ENV}={override!r} is not one of "
                              f"{', '.join(POLICIES)}; set it to one of them or unset it")
        return override, f"config.mixed_precision='auto' and ${PRECISION_ENV}"
    if gpu_present():
        return "float32", "auto: a GPU is present, where bfloat16 was not measured"
    flags = native_bf16_flags()
    if flags:
        return "mixed_bfloat16", f"auto: the CPU computes bfloat16 natively ({', '.join(flags)})"
    return "float32", "auto: the CPU has no bfloat16 arithmetic"


def setup(config) -> bool:
    """Seeds, determinism and precision policy; returns whether to use XLA.

    The policy in effect afterwards is :func:`precision` (what the trainer records).
    """
    keras.utils.set_random_seed(int(config.seed))
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = resolve_precision(config.mixed_precision)
    if policy == "mixed_float16" and not gpu_present():
        raise ConfigError(f"the precision {describe_precision(config.mixed_precision)} needs "
                          "a GPU; use 'mixed_bfloat16' or 'float32' on CPU")
    keras.mixed_precision.set_global_policy(policy)
    # Keep TensorFlow's C++ log chatter out of the CLI's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return resolve_jit_compile(config.jit_compile)


def precision() -> str:
    """The name of the Keras dtype policy new layers are built with now."""
    return keras.mixed_precision.global_policy().name

"""What both speed benchmarks share: the set-up, the measured variants, the step clock,
the machine facts and the CS-KD/CE ratios."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

from cskd_tf.errors import ConfigError


@dataclass(frozen=True)
class SpeedSetup:
    """The backbone, the batch and how many steps/batches are timed, for either mode."""

    model: str = "preact_resnet18"
    width: int = 0  # 0 = the backbone's standard width
    batch_size: int = 128  # anchors per step
    image_size: int = 32
    steps: int = 20  # timed train steps per variant
    warmup: int = 3  # untimed steps first (tracing, allocation)
    data_dir: str = ""  # TinyImageNet root; "" = the embedded digits
    pipeline_batches: int = 60
    peak_gflops: float = 0.0  # the machine's peak as the user states it; 0 = not given

    @property
    def image_shape(self):
        return (self.image_size, self.image_size, 3)

    def check(self):
        if self.steps < 1 or self.warmup < 1 or self.pipeline_batches < 1:
            raise ConfigError("steps, warmup and pipeline_batches must be >= 1 (the first "
                              "timed step needs a warm-up step before it)")
        if self.peak_gflops < 0:
            raise ConfigError(f"peak_gflops={self.peak_gflops} is negative; give the "
                              "machine's peak in GFLOP/s, or 0 for none")


@dataclass(frozen=True)
class Variant:
    """One measured training set-up; ``xla`` is config.jit_compile's auto, on or off."""

    method: str
    precision: str = "float32"
    xla: str = "auto"


def variants(methods=("ce", "cskd"), precision=("float32",), xla=("auto",)) -> list[Variant]:
    """Every variant to measure, in the order given; ConfigError for an unknown or
    repeated value, or for two XLA settings that mean the same here (auto and off
    without a GPU)."""
    from cskd_tf.config import CHOICES
    from cskd_tf.losses import METHODS
    from cskd_tf.runtime import POLICIES, gpu_present, resolve_jit_compile

    check_list("methods", methods, sorted(METHODS))
    check_list("precision", precision, POLICIES)
    check_list("xla", xla, CHOICES["jit_compile"])
    resolved = [resolve_jit_compile(setting) for setting in xla]
    if len(set(resolved)) < len(resolved):
        raise ConfigError(f"xla: {', '.join(xla)} resolve to the same setting here (auto is "
                          f"{'on' if gpu_present() else 'off'} on this machine); list it once")
    if "mixed_float16" in precision and not gpu_present():
        raise ConfigError("precision mixed_float16 needs a GPU; use mixed_bfloat16 on CPU")
    return [Variant(method, policy, setting)
            for setting in xla for policy in precision for method in methods]


def check_list(name, values, allowed):
    values = list(values)
    if not values:
        raise ConfigError(f"{name} is empty; give at least one value")
    for value in values:
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        if values.count(value) > 1:
            raise ConfigError(f"{name} lists {value!r} twice")


def step_clock():
    """A Keras callback marking the end of every train batch.

    ``marks[i]`` is ``time.perf_counter()`` and ``cpu_marks[i]`` this process's
    ``time.process_time()`` (all its threads) when batch ``i`` has finished: reading
    ``logs["loss"]`` waits for the step's result, so a mark is never taken early.
    """
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.marks, self.cpu_marks = [], []

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])
            self.marks.append(time.perf_counter())
            self.cpu_marks.append(time.process_time())

    return StepClock()


def machine_facts() -> dict:
    """Platform, usable CPU cores, GPU presence, TensorFlow version, bfloat16 CPU flags."""
    import tensorflow as tf

    from cskd_tf.runtime import cpu_flags, gpu_present

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "cpus": cpus, "gpu": gpu_present(),
            "tensorflow": tf.__version__,
            "cpu_bf16_flags": sorted(flag for flag in cpu_flags() if "bf16" in flag)}


def precision_speedups(plan, rows) -> dict:
    """{"ce,xla=off,mixed_bfloat16": float32 step s / this variant's step s, ...}: how many
    times faster each 16-bit variant runs than the float32 one of the same method and XLA
    setting (absent when float32 was not measured)."""
    by_variant = dict(zip(plan, rows))
    speedups = {}
    for variant, row in by_variant.items():
        base = by_variant.get(Variant(variant.method, "float32", variant.xla))
        if variant.precision != "float32" and base is not None:
            key = f"{variant.method},xla={'on' if row['xla'] else 'off'},{variant.precision}"
            speedups[key] = base["step_seconds"] / row["step_seconds"]
    return speedups


def step_time_ratios(plan, rows) -> dict:
    """{"xla=off,float32": CS-KD step s / CE step s, ...}, for each CS-KD variant that has
    a CE variant at the same precision and XLA setting."""
    by_variant = dict(zip(plan, rows))
    ratios = {}
    for variant, row in by_variant.items():
        ce = by_variant.get(Variant("ce", variant.precision, variant.xla))
        if variant.method == "cskd" and ce is not None:
            key = f"xla={'on' if row['xla'] else 'off'},{variant.precision}"
            ratios[key] = row["step_seconds"] / ce["step_seconds"]
    return ratios

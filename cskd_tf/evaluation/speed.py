"""How fast a CE step, a CS-KD step, the pair pipeline and evaluation run here.

The library behind ``cskd-speed`` (cskd_tf/cli/speed.py): plain functions over a
:class:`SpeedSetup`, so a notebook or another benchmark can call them without flags.

Train-step throughput is measured on one fixed batch held in memory, so it is
the model's speed alone; the pipeline is measured separately on real data
(TinyImageNet when ``data_dir`` is given, else digits) with JPEG decoding
and augmentation. A CS-KD step does one extra forward pass without gradient,
so its ideal step-time ratio to CE is about 1.33.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SpeedSetup:
    """What is measured: the backbone, the batch and how many steps/batches are timed."""

    model: str = "preact_resnet18"
    width: int = 0  # 0 = the backbone's standard width
    batch_size: int = 128  # anchors per step
    image_size: int = 32
    num_classes: int = 200
    steps: int = 20  # timed train steps per configuration
    warmup: int = 3  # untimed steps first (tracing, allocation)
    data_dir: str = ""  # TinyImageNet root for the pipeline figure; "" = digits
    pipeline_batches: int = 60

    @property
    def image_shape(self):
        return (self.image_size, self.image_size, 3)


def time_train_steps(setup: SpeedSetup, method_name, jit_compile, policy="float32"):
    """Anchor images per second of ``model.fit`` steps on one in-memory batch.

    Returns the result row plus the trained model under ``"model"`` (for :func:`time_eval`).
    """
    import keras
    import tensorflow as tf

    from cskd_tf import losses, models
    from cskd_tf.config import default_config

    keras.mixed_precision.set_global_policy(policy)
    method = losses.get_method(method_name, default_config())
    backbone = models.build(setup.model, num_classes=setup.num_classes,
                            input_shape=setup.image_shape, width=setup.width)
    model = models.CSKDModel(backbone, method=method, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile)
    rng = tf.random.Generator.from_seed(0)
    images = tuple(rng.uniform((setup.batch_size, *setup.image_shape)) for _ in method.views)
    labels = rng.uniform((setup.batch_size,), maxval=setup.num_classes, dtype=tf.int32)
    element = (images if len(images) > 1 else images[0], labels)
    dataset = tf.data.Dataset.from_tensors(element).repeat()

    clock = step_clock()
    model.fit(dataset, steps_per_epoch=setup.warmup + setup.steps, epochs=1, verbose=0,
              shuffle=False, callbacks=[clock])
    timed = clock.marks[setup.warmup:]
    seconds = (timed[-1] - clock.marks[setup.warmup - 1]) / len(timed)
    keras.mixed_precision.set_global_policy("float32")
    return {"method": method_name, "xla": bool(jit_compile), "precision": policy,
            "step_seconds": seconds, "anchor_images_per_s": setup.batch_size / seconds,
            "model": model}


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


def time_eval(setup: SpeedSetup, model) -> float:
    """Images per second of :func:`cskd_tf.evaluation.predict.predict` on random images."""
    import tensorflow as tf

    from cskd_tf.evaluation.predict import predict

    n = setup.batch_size * 8
    images = tf.random.uniform((n, *setup.image_shape), seed=1)
    labels = tf.zeros((n,), tf.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(256).cache()
    predict(model, dataset.take(1))  # trace once
    start = time.perf_counter()
    predict(model, dataset)
    return n / (time.perf_counter() - start)


def time_pipeline(setup: SpeedSetup) -> dict:
    """Pairs per second of the training pair pipeline (decode + augment included)."""
    from cskd_tf import data as data_lib
    from cskd_tf.config import default_config

    config = default_config()
    if setup.data_dir:
        config.dataset, config.data_dir, config.augment = ("tinyimagenet", setup.data_dir,
                                                           "tinyimagenet")
        config.image_size = setup.image_size
    config.batch_size = setup.batch_size
    config.num_epochs = 1000
    info, splits = data_lib.prepare(config)
    dataset, _ = data_lib.train_dataset(config, info, splits["train"])
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    start = time.perf_counter()
    for _ in range(setup.pipeline_batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"dataset": config.dataset,
            "pairs_per_s": setup.pipeline_batches * setup.batch_size / seconds}


def measure(setup: SpeedSetup, xla=("off",), precision=(), log=print) -> dict:
    """Every figure of the benchmark as one JSON-able report.

    ``xla``: settings to measure ("off", "on"); ``precision``: policies besides float32
    (mixed_float16 needs a GPU). ``log`` receives one line per measured train step.
    """
    rows = []
    models_by_key = {}
    policies = ["float32", *precision]
    for setting in xla:
        for policy in policies:
            for method in ("ce", "cskd"):
                result = time_train_steps(setup, method, setting == "on", policy)
                models_by_key[(method, setting, policy)] = result.pop("model")
                rows.append(result)
                log(f"  {method:5s} xla={setting:3s} {policy:14s} "
                    f"{result['anchor_images_per_s']:8.1f} anchor img/s")

    def row(method, setting, policy):
        return next(r for r in rows if r["method"] == method and r["xla"] == (setting == "on")
                    and r["precision"] == policy)

    ratios = {f"xla={setting},{policy}": (row("cskd", setting, policy)["step_seconds"]
                                          / row("ce", setting, policy)["step_seconds"])
              for setting in xla for policy in policies}
    eval_rate = time_eval(setup, models_by_key[("ce", xla[0], "float32")])
    pipeline = time_pipeline(setup)
    slowest_step = min(r["anchor_images_per_s"] for r in rows if r["method"] == "cskd")
    setup_row = {k: v for k, v in asdict(setup).items()
                 if k in ("model", "width", "batch_size", "image_size", "num_classes")}
    return {
        "machine": machine_facts(),
        "setup": {**setup_row, "timed_steps": setup.steps},
        "train_steps": rows,
        "cskd_over_ce_step_time": ratios,
        "eval_images_per_s": eval_rate,
        "pipeline": {**pipeline,
                     "pairs_per_s_over_cskd_step_consumption": pipeline["pairs_per_s"] / slowest_step},
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def machine_facts() -> dict:
    """Platform, usable CPU cores, whether a GPU is present, TensorFlow version."""
    import tensorflow as tf

    from cskd_tf.runtime import gpu_present

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "cpus": cpus, "gpu": gpu_present(),
            "tensorflow": tf.__version__}


def format_table(report) -> str:
    """The report of :func:`measure` as a markdown table and a few summary lines."""
    lines = ["", "| method | XLA | precision | step (s) | anchor img/s |", "|---|---|---|---:|---:|"]
    for r in report["train_steps"]:
        lines.append(f"| {r['method']} | {'on' if r['xla'] else 'off'} | {r['precision']} | "
                     f"{r['step_seconds']:.3f} | {r['anchor_images_per_s']:.1f} |")
    lines.append("")
    for key, ratio in report["cskd_over_ce_step_time"].items():
        lines.append(f"CS-KD / CE step time ({key}): {ratio:.2f}  (ideal ≈ 1.33)")
    p = report["pipeline"]
    lines.append(f"pair pipeline ({p['dataset']}): {p['pairs_per_s']:.0f} pairs/s = "
                 f"{p['pairs_per_s_over_cskd_step_consumption']:.1f}x the CS-KD step's consumption")
    lines.append(f"evaluation: {report['eval_images_per_s']:.0f} images/s; "
                 f"peak memory {report['peak_memory_mib']:.0f} MiB")
    return "\n".join(lines)

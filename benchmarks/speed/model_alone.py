"""Model alone: CE and CS-KD train steps on one in-memory batch, evaluation on random
images, and the pair pipeline on real data, each timed separately.

Plain functions over a :class:`ModelAloneSetup`, so a notebook can call them without
flags; ``python -m benchmarks.speed model_alone`` is their command line. What the figures
mean and how to read them: benchmarks/README.md, section 3.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass

from benchmarks.speed.common import (SpeedSetup, Variant, machine_facts,
                                     precision_speedups, step_clock, step_time_ratios,
                                     variants)
from benchmarks.speed.flops import flop_rates, forward_flops


@dataclass(frozen=True)
class ModelAloneSetup(SpeedSetup):
    """:class:`SpeedSetup` plus the classifier's classes (the labels are random)."""

    num_classes: int = 200


def time_train_steps(setup: ModelAloneSetup, variant: Variant):
    """(result row, the trained model) of ``model.fit`` steps on one in-memory batch."""
    import keras
    import tensorflow as tf

    from cskd_tf import losses, models
    from cskd_tf.config import default_config
    from cskd_tf.runtime import resolve_jit_compile

    jit_compile = resolve_jit_compile(variant.xla)
    keras.mixed_precision.set_global_policy(variant.precision)
    try:
        method = losses.get_method(variant.method, default_config())
        backbone = models.build(setup.model, num_classes=setup.num_classes,
                                input_shape=setup.image_shape, width=setup.width)
        model = models.CSKDModel(backbone, method=method, weight_decay=1e-4)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      jit_compile=jit_compile)
        rng = tf.random.Generator.from_seed(0)
        images = tuple(rng.uniform((setup.batch_size, *setup.image_shape))
                       for _ in method.views)
        labels = rng.uniform((setup.batch_size,), maxval=setup.num_classes, dtype=tf.int32)
        element = (images if len(images) > 1 else images[0], labels)
        dataset = tf.data.Dataset.from_tensors(element).repeat()
        clock = step_clock()
        model.fit(dataset, steps_per_epoch=setup.warmup + setup.steps, epochs=1, verbose=0,
                  shuffle=False, callbacks=[clock])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    timed = clock.marks[setup.warmup:]
    seconds = (timed[-1] - clock.marks[setup.warmup - 1]) / len(timed)
    rate = setup.batch_size / seconds
    row = {"method": variant.method, "precision": variant.precision, "xla": jit_compile,
           "step_seconds": seconds, "anchor_images_per_s": rate,
           **flop_rates(variant.method, forward_flops(backbone), rate, setup.peak_gflops)}
    return row, model


def time_eval(setup: ModelAloneSetup, model) -> float:
    """Images per second of :func:`cskd_tf.evaluation.inference.logits_and_features` on
    random images."""
    import tensorflow as tf

    from cskd_tf.evaluation.inference import logits_and_features

    n = setup.batch_size * 8
    images = tf.random.uniform((n, *setup.image_shape), seed=1)
    labels = tf.zeros((n,), tf.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(256).cache()
    logits_and_features(model, dataset.take(1))  # trace once
    start = time.perf_counter()
    logits_and_features(model, dataset)
    return n / (time.perf_counter() - start)


def time_pipeline(setup: ModelAloneSetup) -> dict:
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
    # Full batches only: the rate counts batch_size pairs per batch.
    dataset, _ = data_lib.train_dataset(config, info, splits["train"], drop_remainder=True)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    start = time.perf_counter()
    for _ in range(setup.pipeline_batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"dataset": config.dataset,
            "pairs_per_s": setup.pipeline_batches * setup.batch_size / seconds}


def measure(setup: ModelAloneSetup, methods=("ce", "cskd"), precision=("float32",),
            xla=("auto",), log=print) -> dict:
    """Every figure of the model-alone benchmark as one JSON-able report.

    ``precision``: every policy to measure (mixed_float16 needs a GPU); ``xla``:
    config.jit_compile settings (auto: on only with a GPU). ``log`` receives one line per
    measured variant. Evaluation is timed on the first variant's model.
    """
    setup.check()
    plan = variants(methods, precision, xla)
    rows, first_model = [], None
    for variant in plan:
        row, model = time_train_steps(setup, variant)
        first_model = first_model or model
        rows.append(row)
        log(f"  {variant.method:5s} {variant.precision:14s} xla={'on' if row['xla'] else 'off':3s}"
            f" {row['anchor_images_per_s']:8.1f} anchor img/s")
    eval_rate = time_eval(setup, first_model)
    pipeline = time_pipeline(setup)
    slowest_step = min(r["anchor_images_per_s"] for r in rows)
    forward = forward_flops(first_model)
    return {
        "mode": "model alone",
        "machine": machine_facts(),
        "setup": {**asdict(setup), "timed_steps": setup.steps},
        "train_steps": rows,
        "cskd_over_ce_step_time": step_time_ratios(plan, rows),
        "speedup_over_float32": precision_speedups(plan, rows),
        "eval_images_per_s": eval_rate,
        "eval_gflop_per_s": forward * eval_rate / 1e9,
        "pipeline": {**pipeline,
                     "pairs_per_s_over_slowest_step_consumption":
                         pipeline["pairs_per_s"] / slowest_step},
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }

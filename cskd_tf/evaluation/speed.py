"""cskd-speed: how fast a CE step, a CS-KD step, the pair pipeline and evaluation run here.

    cskd-speed [--model=preact_resnet18] [--batch_size=128] [--image_size=32]
               [--num_classes=200] [--steps=20] [--data_dir=/tmp/tiny-imagenet-200-lowshot]
               [--xla=off,on] [--output=speed.json]

Train-step throughput is measured on one fixed batch held in memory, so it is
the model's speed alone; the pipeline is measured separately on real data
(TinyImageNet when ``--data_dir`` is given, else digits) with JPEG decoding
and augmentation. A CS-KD step does one extra forward pass without gradient,
so its ideal step-time ratio to CE is about 1.33.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time

from absl import flags

flags.DEFINE_string("model", "preact_resnet18", "Backbone name.")
flags.DEFINE_integer("width", 0, "Backbone width (0 = standard).")
flags.DEFINE_integer("batch_size", 128, "Anchor batch size.")
flags.DEFINE_integer("image_size", 32, "Input size in px.")
flags.DEFINE_integer("num_classes", 200, "Classes of the classifier.")
flags.DEFINE_integer("steps", 20, "Timed train steps per configuration (after warm-up).")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, allocation).")
flags.DEFINE_string("data_dir", "", "TinyImageNet root for the pipeline figure; else digits.")
flags.DEFINE_list("xla", ["off"], "XLA settings to measure: off, on.")
flags.DEFINE_list("precision", [], "Extra precision policies (mixed_float16 needs a GPU).")
flags.DEFINE_integer("pipeline_batches", 60, "Batches timed for the pair pipeline.")
flags.DEFINE_string("output", "", "Write the results as JSON here too.")
FLAGS = flags.FLAGS


def time_train_steps(method_name, jit_compile, policy="float32"):
    """Anchor images per second of ``model.fit`` steps on one in-memory batch."""
    import keras
    import tensorflow as tf

    from cskd_tf import losses, models
    from cskd_tf.config import default_config

    keras.mixed_precision.set_global_policy(policy)
    config = default_config()
    method = losses.get_method(method_name, config)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    backbone = models.build(FLAGS.model, num_classes=FLAGS.num_classes, input_shape=shape,
                            width=FLAGS.width)
    model = models.CSKDModel(backbone, method=method, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile)
    rng = tf.random.Generator.from_seed(0)
    images = tuple(rng.uniform((FLAGS.batch_size, *shape)) for _ in method.views)
    labels = rng.uniform((FLAGS.batch_size,), maxval=FLAGS.num_classes, dtype=tf.int32)
    element = (images if len(images) > 1 else images[0], labels)
    dataset = tf.data.Dataset.from_tensors(element).repeat()

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.marks = []

        def on_train_batch_end(self, batch, logs=None):
            # Reading the loss waits for the step to finish, so marks are honest.
            float(logs["loss"])
            self.marks.append(time.perf_counter())

    clock = Clock()
    model.fit(dataset, steps_per_epoch=FLAGS.warmup + FLAGS.steps, epochs=1, verbose=0, shuffle=False,
              callbacks=[clock])
    timed = clock.marks[FLAGS.warmup:]
    seconds = (timed[-1] - clock.marks[FLAGS.warmup - 1]) / len(timed)
    keras.mixed_precision.set_global_policy("float32")
    return {"method": method_name, "xla": bool(jit_compile), "precision": policy,
            "step_seconds": seconds, "anchor_images_per_s": FLAGS.batch_size / seconds,
            "model": model}


def time_eval(model):
    import tensorflow as tf

    from cskd_tf.evaluation.predict import predict

    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    n = FLAGS.batch_size * 8
    images = tf.random.uniform((n, *shape), seed=1)
    labels = tf.zeros((n,), tf.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(256).cache()
    predict(model, dataset.take(1))  # trace once
    start = time.perf_counter()
    predict(model, dataset)
    return n / (time.perf_counter() - start)


def time_pipeline():
    from cskd_tf import data as data_lib
    from cskd_tf.config import default_config

    config = default_config()
    if FLAGS.data_dir:
        config.dataset, config.data_dir, config.augment = "tinyimagenet", FLAGS.data_dir, "tinyimagenet"
        config.image_size = FLAGS.image_size
    config.batch_size = FLAGS.batch_size
    config.num_epochs = 1000
    info, splits = data_lib.prepare(config)
    dataset, _ = data_lib.train_dataset(config, info, splits["train"])
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.pipeline_batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"dataset": config.dataset,
            "pairs_per_s": FLAGS.pipeline_batches * FLAGS.batch_size / seconds}


def main(argv):
    del argv
    import tensorflow as tf

    from cskd_tf.training.runtime import gpu_present

    rows = []
    models_by_key = {}
    policies = ["float32", *FLAGS.precision]
    for xla in FLAGS.xla:
        for policy in policies:
            for method in ("ce", "cskd"):
                result = time_train_steps(method, xla == "on", policy)
                models_by_key[(method, xla, policy)] = result.pop("model")
                rows.append(result)
                print(f"  {method:5s} xla={xla:3s} {policy:14s} "
                      f"{result['anchor_images_per_s']:8.1f} anchor img/s", flush=True)
    ratios = {}
    for xla in FLAGS.xla:
        for policy in policies:
            ce = next(r for r in rows if r["method"] == "ce" and r["xla"] == (xla == "on")
                      and r["precision"] == policy)
            cskd = next(r for r in rows if r["method"] == "cskd" and r["xla"] == (xla == "on")
                        and r["precision"] == policy)
            ratios[f"xla={xla},{policy}"] = cskd["step_seconds"] / ce["step_seconds"]
    eval_rate = time_eval(models_by_key[("ce", FLAGS.xla[0], "float32")])
    pipeline = time_pipeline()
    slowest_step = min(r["anchor_images_per_s"] for r in rows if r["method"] == "cskd")
    report = {
        "machine": {"platform": platform.platform(), "cpus": _cpu_count(),
                    "gpu": gpu_present(), "tensorflow": tf.__version__},
        "setup": {"model": FLAGS.model, "width": FLAGS.width, "batch_size": FLAGS.batch_size,
                  "image_size": FLAGS.image_size, "num_classes": FLAGS.num_classes,
                  "timed_steps": FLAGS.steps},
        "train_steps": rows,
        "cskd_over_ce_step_time": ratios,
        "eval_images_per_s": eval_rate,
        "pipeline": {**pipeline,
                     "pairs_per_s_over_cskd_step_consumption": pipeline["pairs_per_s"] / slowest_step},
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(_table(report))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(report, f, indent=2)


def _cpu_count():
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _table(report):
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


def run():
    from cskd_tf.cli import common

    common.run(main)


if __name__ == "__main__":
    sys.exit(run())

"""Capture a tf.profiler trace of a few train steps (the model alone), as in section 3.3.

    python benchmarks/profile_step.py --method=cskd --precision=float32 --logdir=/tmp/prof
    tensorboard --logdir=/tmp/prof     # Profile tab, "tensorflow_stats": self time per op type

PreAct ResNet-18 (width 64 unless --width), 200 classes, batch 128, 32 px, random images on
one in-memory batch: the step `python -m benchmarks.speed model_alone` times, with the
paper's weight decay. The first steps (tracing, oneDNN primitive creation) run before the
trace starts.
"""

from __future__ import annotations

import argparse
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="cskd")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--width", type=int, default=0, help="0 = the standard width (64)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--logdir", required=True)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from cskd_tf import losses, models
    from cskd_tf.config import default_config

    keras.mixed_precision.set_global_policy(args.precision)
    method = losses.get_method(args.method, default_config())
    backbone = models.build("preact_resnet18", num_classes=200, input_shape=(32, 32, 3),
                            width=args.width)
    model = models.CSKDModel(backbone, method=method, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=False)
    rng = tf.random.Generator.from_seed(0)
    images = tuple(rng.uniform((128, 32, 32, 3)) for _ in method.views)
    labels = rng.uniform((128,), maxval=200, dtype=tf.int32)
    batch = (images if len(images) > 1 else images[0], labels)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()

    model.fit(dataset, steps_per_epoch=args.warmup, epochs=1, verbose=0)
    tf.profiler.experimental.start(args.logdir)
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
    seconds = (time.perf_counter() - start) / args.steps
    tf.profiler.experimental.stop()
    print(f"{args.method} {args.precision}: {seconds:.3f} s/step while profiled; "
          f"trace in {args.logdir}")


if __name__ == "__main__":
    main()

"""How fast CE and CS-KD train here: ``python -m benchmarks.speed MODE [flags]``, run from
the repository root (benchmarks/ is not installed with cskd_tf).

    python -m benchmarks.speed model_alone [--num_classes=200] [--data_dir=TINYIMAGENET] \
        [--methods=ce,cskd] [--precision=float32,mixed_bfloat16] [--xla=off,on] \
        [--peak_gflops=190] [--output=speed.json]
    python -m benchmarks.speed end_to_end [--max_classes=50] [--augment=lowshot_cifar] \
        [--data_dir=TINYIMAGENET] [--methods=ce,cskd] [--precision=float32,mixed_bfloat16] \
        [--peak_gflops=190] [--output=speed_e2e.json]

``model_alone`` times train steps on one in-memory batch, then evaluation and the pair
pipeline separately (benchmarks/speed/model_alone.py); ``end_to_end`` times ``model.fit``
on the real cskd-train path, one fresh process per variant (end_to_end.py). A flag means
the same in both modes; ``--num_classes`` (random labels) belongs to model_alone and
``--max_classes``/``--augment`` (the training data) to end_to_end.
"""

from __future__ import annotations

import json
import sys

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags

MODES = ("model_alone", "end_to_end")
FLAGS = flags.FLAGS


def define_flags(mode):
    flags.DEFINE_string("model", "preact_resnet18", "Backbone name.")
    flags.DEFINE_integer("width", 0, "Backbone width (0 = standard).")
    flags.DEFINE_integer("batch_size", 128, "Anchor batch size.")
    flags.DEFINE_integer("image_size", 32, "Input size in px.")
    flags.DEFINE_integer("steps", 20, "Timed train steps per variant (after warm-up).")
    flags.DEFINE_integer("warmup", 3, "Untimed train steps first (tracing, allocation).")
    flags.DEFINE_string("data_dir", "", "TinyImageNet root of the pair pipeline; empty = the "
                        "embedded digits.")
    flags.DEFINE_integer("pipeline_batches", 60, "Batches timed for the pair pipeline.")
    flags.DEFINE_list("methods", ["ce", "cskd"], "Methods to measure.")
    flags.DEFINE_list("precision", ["float32"], "Every precision policy to measure "
                      "(mixed_float16 needs a GPU).")
    flags.DEFINE_list("xla", ["auto"], "Every config.jit_compile setting to measure: auto "
                      "(cskd-train's default: on only with a GPU), off, on.")
    flags.DEFINE_float("peak_gflops", 0.0, "The machine's peak GFLOP/s, as you know it; adds "
                       "the fraction of it each variant reaches (0 = not shown).")
    flags.DEFINE_string("output", "", "Write the report as JSON here too.")
    if mode == "model_alone":
        flags.DEFINE_integer("num_classes", 200, "Classes of the classifier (the labels are "
                             "random).")
    else:
        flags.DEFINE_integer("max_classes", 0, "Train on the dataset's first N classes "
                             "(config.max_classes; 0 = all).")
        flags.DEFINE_string("augment", "", "Training augmentation (config.augment); empty = "
                            "the dataset's own (tinyimagenet, digits).")


def common_setup():
    return dict(model=FLAGS.model, width=FLAGS.width, batch_size=FLAGS.batch_size,
                image_size=FLAGS.image_size, steps=FLAGS.steps, warmup=FLAGS.warmup,
                data_dir=FLAGS.data_dir, pipeline_batches=FLAGS.pipeline_batches,
                peak_gflops=FLAGS.peak_gflops)


def main(mode):
    def run(argv):
        del argv
        from benchmarks.speed.table import format_table

        choice = dict(methods=tuple(FLAGS.methods), precision=tuple(FLAGS.precision),
                      xla=tuple(FLAGS.xla), log=lambda line: print(line, flush=True))
        if mode == "model_alone":
            from benchmarks.speed import model_alone

            setup = model_alone.ModelAloneSetup(num_classes=FLAGS.num_classes,
                                                **common_setup())
            report = model_alone.measure(setup, **choice)
        else:
            from benchmarks.speed import end_to_end

            setup = end_to_end.EndToEndSetup(max_classes=FLAGS.max_classes,
                                             augment=FLAGS.augment, **common_setup())
            # Each variant's process imports TensorFlow without its start-up notices too.
            report = end_to_end.measure(setup, initializer=common.import_tensorflow_quietly,
                                        **choice)
        print(format_table(report))
        if FLAGS.output:
            with open(FLAGS.output, "w") as f:
                json.dump(report, f, indent=2)
    return run


def cli():
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        print(f"error: give the mode first: python -m benchmarks.speed {{{','.join(MODES)}}} "
              "[flags]; --help after the mode lists its flags", file=sys.stderr)
        sys.exit(2)
    mode = sys.argv.pop(1)
    define_flags(mode)
    common.run(main(mode))


if __name__ == "__main__":
    cli()

"""cskd-speed: how fast a CE step, a CS-KD step, the pair pipeline and evaluation run here.

Model alone (the default): train steps on one in-memory batch, the pair pipeline and
evaluation timed separately (cskd_tf/evaluation/speed.py):

    cskd-speed [--model=preact_resnet18] [--batch_size=128] [--image_size=32]
               [--num_classes=200] [--steps=20] [--data_dir=/tmp/tiny-imagenet-200-lowshot]
               [--xla=off,on] [--precision=mixed_bfloat16] [--output=speed.json]

End to end (--end_to_end): ``model.fit`` steps of the real cskd-train path — shard cache,
pair pipeline with decoding and augmentation, the model compiled as cskd-train compiles it —
one fresh process per variant (cskd_tf/training/speed.py); it reports anchor images/s, step
seconds, the CS-KD/CE step-time ratio, the pipeline's share of the CPU and peak memory:

    cskd-speed --end_to_end [--data_dir=/tmp/tiny-imagenet-200-lowshot] [--num_classes=50]
               [--augment=lowshot_cifar] [--methods=ce,cskd] [--precision=float32,mixed_bfloat16]
               [--output=speed_e2e.json]

There --num_classes keeps the dataset's first N classes (config.max_classes), --precision
lists every policy to measure (float32 alone by default) and --xla, when given, replaces
cskd-train's auto setting. This module only reads the flags.
"""

from __future__ import annotations

import json

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags  # noqa: E402

flags.DEFINE_string("model", "preact_resnet18", "Backbone name.")
flags.DEFINE_integer("width", 0, "Backbone width (0 = standard).")
flags.DEFINE_integer("batch_size", 128, "Anchor batch size.")
flags.DEFINE_integer("image_size", 32, "Input size in px.")
flags.DEFINE_integer("num_classes", 200, "Classes of the classifier (--end_to_end: the "
                     "dataset's first N classes, config.max_classes).")
flags.DEFINE_integer("steps", 20, "Timed train steps per configuration (after warm-up).")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, allocation).")
flags.DEFINE_string("data_dir", "", "TinyImageNet root for the pipeline figure (--end_to_end: "
                    "the training data); else digits.")
flags.DEFINE_list("xla", ["off"], "XLA settings to measure: off, on (--end_to_end without "
                  "this flag: cskd-train's auto, on only with a GPU).")
flags.DEFINE_list("precision", [], "Model alone: precision policies besides float32 "
                  "(mixed_float16 needs a GPU). --end_to_end: every policy to measure "
                  "(default float32).")
flags.DEFINE_integer("pipeline_batches", 60, "Batches timed for the pair pipeline.")
flags.DEFINE_bool("end_to_end", False, "Time model.fit on the real cskd-train path instead "
                  "of the model alone.")
flags.DEFINE_list("methods", ["ce", "cskd"], "--end_to_end: methods to measure.")
flags.DEFINE_string("augment", "", "--end_to_end: training augmentation (config.augment); "
                    "default the dataset's own (tinyimagenet, digits).")
flags.DEFINE_string("output", "", "Write the results as JSON here too.")
FLAGS = flags.FLAGS

END_TO_END_ONLY = ("methods", "augment")


def main(argv):
    del argv
    from cskd_tf.errors import ConfigError

    bad = [x for x in FLAGS.xla if x not in ("off", "on")]
    if bad or not FLAGS.xla:
        raise ConfigError(f"--xla takes a list of off and on (got {','.join(FLAGS.xla)!r})")
    if FLAGS.steps < 1 or FLAGS.warmup < 1:
        raise ConfigError("--steps and --warmup must be >= 1 (the first timed step needs a "
                          "warm-up step before it)")
    if FLAGS.end_to_end:
        report, table = end_to_end()
    else:
        given = [f"--{name}" for name in END_TO_END_ONLY if FLAGS[name].present]
        if given:
            raise ConfigError(f"{', '.join(given)}: used only with --end_to_end; add "
                              "--end_to_end or drop them")
        report, table = model_alone()
    print(table)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(report, f, indent=2)


def model_alone():
    from cskd_tf.evaluation import speed

    setup = speed.SpeedSetup(
        model=FLAGS.model, width=FLAGS.width, batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size, num_classes=FLAGS.num_classes, steps=FLAGS.steps,
        warmup=FLAGS.warmup, data_dir=FLAGS.data_dir, pipeline_batches=FLAGS.pipeline_batches)
    report = speed.measure(setup, xla=tuple(FLAGS.xla), precision=tuple(FLAGS.precision),
                           log=lambda line: print(line, flush=True))
    return report, speed.format_table(report)


def end_to_end():
    from cskd_tf.training import speed

    setup = speed.EndToEndSetup(
        model=FLAGS.model, width=FLAGS.width, batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size, num_classes=FLAGS.num_classes, steps=FLAGS.steps,
        warmup=FLAGS.warmup, data_dir=FLAGS.data_dir, pipeline_batches=FLAGS.pipeline_batches,
        augment=FLAGS.augment)
    report = speed.measure_end_to_end(
        setup, methods=tuple(FLAGS.methods), precision=tuple(FLAGS.precision) or ("float32",),
        xla=tuple(FLAGS.xla) if FLAGS["xla"].present else ("auto",),
        log=lambda line: print(line, flush=True),
        # Each variant's process imports TensorFlow without its start-up notices too.
        initializer=common.import_tensorflow_quietly)
    return report, speed.format_table(report)


def run():
    common.run(main)


if __name__ == "__main__":
    run()

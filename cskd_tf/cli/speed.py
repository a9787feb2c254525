"""cskd-speed: how fast a CE step, a CS-KD step, the pair pipeline and evaluation run here.

    cskd-speed [--model=preact_resnet18] [--batch_size=128] [--image_size=32]
               [--num_classes=200] [--steps=20] [--data_dir=/tmp/tiny-imagenet-200-lowshot]
               [--xla=off,on] [--output=speed.json]

The measurements are cskd_tf/evaluation/speed.py's; this module only reads the flags.
"""

from __future__ import annotations

import json

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags  # noqa: E402

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


def main(argv):
    del argv
    from cskd_tf.errors import ConfigError
    from cskd_tf.evaluation import speed

    bad = [x for x in FLAGS.xla if x not in ("off", "on")]
    if bad or not FLAGS.xla:
        raise ConfigError(f"--xla takes a list of off and on (got {','.join(FLAGS.xla)!r})")
    if FLAGS.steps < 1 or FLAGS.warmup < 1:
        raise ConfigError("--steps and --warmup must be >= 1 (the first timed step needs a "
                          "warm-up step before it)")
    setup = speed.SpeedSetup(
        model=FLAGS.model, width=FLAGS.width, batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size, num_classes=FLAGS.num_classes, steps=FLAGS.steps,
        warmup=FLAGS.warmup, data_dir=FLAGS.data_dir, pipeline_batches=FLAGS.pipeline_batches)
    report = speed.measure(setup, xla=tuple(FLAGS.xla), precision=tuple(FLAGS.precision),
                           log=lambda line: print(line, flush=True))
    print(speed.format_table(report))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(report, f, indent=2)


def run():
    common.run(main)


if __name__ == "__main__":
    run()

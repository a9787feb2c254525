"""cskd-train: train a classifier with CS-KD (or another method) from a config file.

    cskd-train --config=configs/digits_quick.py --workdir=runs/digits \
        [--config.FIELD=VALUE ...] [--config_overrides=best.json] [--overwrite]

Rerunning the same command after an interruption resumes from the last
completed epoch; a finished workdir is only replaced with --overwrite.
"""

from __future__ import annotations

import json

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.json.")
flags.DEFINE_string("config_overrides", "", "JSON file of config fields to override "
                    "(e.g. the best.json that cskd-tune writes).")
flags.DEFINE_bool("overwrite", False, "Replace a finished run in --workdir.")
FLAGS = flags.FLAGS


def main(argv):
    from cskd_tf.errors import ConfigError

    common.refuse_arguments(argv)

    if not FLAGS.workdir:
        raise ConfigError("--workdir is required: the directory for checkpoints and metrics.json")
    config = common.load_config(FLAGS.config, FLAGS.config_overrides)
    common.import_tensorflow_quietly()  # only once the config is known to be valid
    from cskd_tf.training.trainer import train

    metrics = train(config, FLAGS.workdir, overwrite=FLAGS.overwrite)
    print(json.dumps(metrics, indent=2, sort_keys=True))


def run():
    common.run(main, needs_tensorflow=False)  # main imports it after validating the config


if __name__ == "__main__":
    run()

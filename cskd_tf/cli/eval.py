"""cskd-eval: re-evaluate a trained run and print the metrics JSON.

    cskd-eval --workdir=DIR [--split=val|test|train]
"""

from __future__ import annotations

import json

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags  # noqa: E402

flags.DEFINE_string("workdir", None, "A cskd-train workdir.")
flags.DEFINE_string("split", "", "One split to evaluate; default: every split of the run.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from cskd_tf import data as data_lib
    from cskd_tf.errors import ConfigError
    from cskd_tf.training.trainer import evaluate_splits, load_trained

    if not FLAGS.workdir:
        raise ConfigError("--workdir is required: a directory written by cskd-train")
    config, _, model = load_trained(FLAGS.workdir)
    info, splits = data_lib.prepare(config)
    if FLAGS.split:
        if FLAGS.split not in splits:
            raise ConfigError(f"--split={FLAGS.split} is not a split of {config.dataset}; "
                              f"choose one of: {', '.join(sorted(splits))}")
        with config.unlocked():
            config.eval_splits = (FLAGS.split,)
    print(json.dumps(evaluate_splits(model, config, info, splits), indent=2, sort_keys=True))


def run():
    common.run(main)


if __name__ == "__main__":
    run()

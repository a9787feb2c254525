r"""cskd-tune: search λ and T (and optionally learning rate, weight decay) with Keras Tuner.

    cskd-tune --config=configs/digits_quick.py --workdir=runs/tune_digits \
        --tuner=random --max_trials=20 [--objective=val_accuracy] [--config.FIELD=VALUE ...]

The search space is config.search (see cskd_tf/config.py); every objective
is measured on the validation split. At the end DIR/trials.csv lists every
trial and DIR/best.json holds the best values, which
``cskd-train --config=... --config_overrides=DIR/best.json`` retrains.
Rerunning the same command resumes an interrupted search. For a distributed
search set KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT (docs/tuning.md).
"""

from __future__ import annotations

import sys

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory of the search (trials.csv, best.json, state).")
flags.DEFINE_enum("tuner", "random", ["random", "bayesian", "hyperband"], "Search algorithm.")
flags.DEFINE_integer("max_trials", 0, "Number of trials (random, bayesian; failed ones count). "
                     "Hyperband: optional cap, 0 = what its brackets need.")
flags.DEFINE_string("objective", "val_accuracy", "val_accuracy, val_top5_accuracy, "
                    "val_recall_at_1 (maximized), val_ece, val_nll, val_error_plus_ece "
                    "(minimized); always on the validation split.")
flags.DEFINE_bool("overwrite", False, "Delete the search in --workdir and start over.")
flags.DEFINE_integer("max_consecutive_failed_trials", 3, "Stop the search after this many "
                     "failed trials in a row (e.g. NaN loss at extreme λ).")
flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor; max_epochs is "
                     "config.num_epochs.")
flags.DEFINE_integer("hyperband_iterations", 1, "Hyperband iterations.")
flags.DEFINE_float("chief_wait_s", 300.0, "Distributed worker: seconds to wait for the chief "
                   "oracle to answer before giving up.")
flags.DEFINE_bool("tensorboard", True, "Write TensorBoard logs (with HParams) per trial.")
FLAGS = flags.FLAGS


def main(argv):
    from cskd_tf.errors import ConfigError

    common.refuse_arguments(argv)
    from cskd_tf.tuning.search import SearchOptions, tune

    if not FLAGS.workdir:
        raise ConfigError("--workdir is required: the directory of the search")
    config = common.load_config(FLAGS.config)
    options = SearchOptions(
        tuner=FLAGS.tuner, max_trials=FLAGS.max_trials, objective=FLAGS.objective,
        overwrite=FLAGS.overwrite,
        max_consecutive_failed_trials=FLAGS.max_consecutive_failed_trials,
        hyperband_factor=FLAGS.hyperband_factor, hyperband_iterations=FLAGS.hyperband_iterations,
        chief_wait_s=FLAGS.chief_wait_s, tensorboard=FLAGS.tensorboard)
    try:
        tune(config, FLAGS.workdir, options, retrain_hint=_retrain_hint())
    except KeyboardInterrupt:
        # common.run's message speaks of epochs; a search resumes by trials.
        print("interrupted: rerun the same command to continue the search (finished trials "
              "are kept)", file=sys.stderr)
        sys.exit(130)


def _retrain_hint():
    """The cskd-train command that retrains the best trial: same config file, same
    --config.FIELD flags (except the search space), plus best.json."""
    import shlex

    parts = ["cskd-train", f"--config={config_flags.get_config_filename(FLAGS['config'])}"]
    for key, value in config_flags.get_override_values(FLAGS["config"]).items():
        if not key.startswith("search."):
            parts.append(shlex.quote(f"--config.{key}={value}"))
    # {best} is filled in with the path of best.json; braces in values are escaped.
    parts = [p.replace("{", "{{").replace("}", "}}") for p in parts]
    return "Retrain with: " + " ".join(parts + ["--config_overrides={best}", "--workdir=RUN_DIR"])


def run():
    common.run(main)


if __name__ == "__main__":
    run()

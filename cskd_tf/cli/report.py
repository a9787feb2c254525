"""cskd-report: result tables of finished runs in the CS-KD paper's layout.

    cskd-report RUN_DIR... [--format=markdown|csv|latex] [--split=test|val] [--output=FILE]
                [--selection=final|best_test_epoch]

RUN_DIR may be a run directory (it holds config.json) or any folder above
runs; runs are grouped by dataset x model x method and their seeds averaged
(mean ± std); a run trained in another precision than float32 is labelled so
beside its model (e.g. "resnet18 (mixed_bfloat16)") and never averaged with
float32 runs. Unfinished runs make their group show as incomplete. The split
defaults to test when every finished run has it, else val.

--selection=final (default) reports each run's final model (metrics.json);
--selection=best_test_epoch reports each run at its best test epoch from
history.csv, the number the reference code (alinlab/cs-kd) prints — chosen on
test itself, and every table is labelled so. Only runs trained with
config.protocol=paper (the paper recipes' default) log per-epoch test metrics.
"""

from __future__ import annotations

import os

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first
from cskd_tf.runs.files import blocking_file

from absl import flags

flags.DEFINE_enum("format", "markdown", ["markdown", "csv", "latex"], "Output format.")
flags.DEFINE_string("split", "", "test, val or train; default: test if every finished run has "
                    "it, else val.")
flags.DEFINE_enum("selection", "final", ["final", "best_test_epoch"],
                  "final: the model at the end of training; best_test_epoch: each run's epoch "
                  "with the best test accuracy (selected on test, as the reference code; "
                  "needs config.protocol=paper runs).")
flags.DEFINE_string("output", "", "Write the report to this file instead of stdout.")
FLAGS = flags.FLAGS


def main(argv):
    from cskd_tf.errors import ConfigError
    from cskd_tf.evaluation.report import build_report

    paths = argv[1:]
    if not paths:
        raise ConfigError("no run directories given; usage: cskd-report RUN_DIR... "
                          "[--format=markdown|csv|latex] [--split=test|val] [--output=FILE]")
    text = build_report(paths, fmt=FLAGS.format, split=FLAGS.split, selection=FLAGS.selection)
    if FLAGS.output:
        parent = os.path.dirname(os.path.abspath(FLAGS.output))
        try:
            os.makedirs(parent, exist_ok=True)
            with open(FLAGS.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as error:
            blocking = blocking_file(parent)
            reason = (f"{blocking} is a file, not a folder" if blocking
                      else error.strerror or str(error))
            raise ConfigError(f"cannot write --output={FLAGS.output} ({reason}); pass "
                              "--output=FILE, a file path in a folder you can write") from None
    else:
        print(text, end="")


def run():
    common.run(main, needs_tensorflow=False)


if __name__ == "__main__":
    run()

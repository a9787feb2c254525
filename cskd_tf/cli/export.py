"""cskd-export: a finished run (or a .keras file) -> a TF Serving model version.

    cskd-export --workdir=DIR|DIR/model.keras|MODEL.keras --model_name=NAME [--version=N] \
        [--export_base=saved_models] \
        [--top_k=5] [--version_policy=specific|all|latest] [--serving_base_path=/models]

Writes saved_models/NAME/<version>/ (next free version unless --version is given; an
existing version is never overwritten) and adds it to saved_models/models.config. Prints
the export path, version and config file as JSON. See docs/serving.md.
"""

from __future__ import annotations

import json

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags

flags.DEFINE_string("workdir", None, "A finished cskd-train workdir (has metrics.json), "
                    "its model.keras file, or a CSKDModel's .keras file saved anywhere (its "
                    "input size, class names and pixel range define the export).")
flags.DEFINE_string("model_name", None, "TF Serving model name (the URL's /v1/models/NAME).")
flags.DEFINE_integer("version", None, "Version number (>= 1); default: the next free one.")
flags.DEFINE_string("export_base", "saved_models", "Base directory TF Serving watches.")
flags.DEFINE_integer("top_k", 5, "Classes reported by top_k_classes/top_k_scores.")
flags.DEFINE_enum("version_policy", None, ["specific", "all", "latest"],
                  "models.config version policy; default: keep the model's current one "
                  "(specific for a new model: every exported version is served).")
flags.DEFINE_string("serving_base_path", "", "Where the server sees --export_base, e.g. /models "
                    "in the tensorflow/serving container; default: the local absolute path.")
flags.DEFINE_bool("verify", True, "Reload the export and compare it with the Keras model "
                  "before publishing it.")
FLAGS = flags.FLAGS


def main(argv):
    from cskd_tf.errors import ConfigError

    common.refuse_arguments(argv)
    if not FLAGS.workdir:
        raise ConfigError("--workdir is required: a finished cskd-train workdir or a "
                          ".keras file")
    if not FLAGS.model_name:
        raise ConfigError("--model_name is required: the name clients use in /v1/models/NAME")
    from cskd_tf.serving.export import export_workdir

    result = export_workdir(FLAGS.workdir, FLAGS.model_name, export_base=FLAGS.export_base,
                            version=FLAGS.version, top_k=FLAGS.top_k,
                            version_policy=FLAGS.version_policy,
                            serving_base_path=FLAGS.serving_base_path, verify=FLAGS.verify)
    print(json.dumps({"path": result.path, "model_name": result.model_name,
                      "version": result.version, "models_config": result.models_config,
                      "base_path": result.base_path}, indent=2))


def run():
    common.run(main)


if __name__ == "__main__":
    run()

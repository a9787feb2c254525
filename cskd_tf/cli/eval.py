"""cskd-eval: re-evaluate a trained run, or an export on its own, and print the metrics JSON.

    cskd-eval --workdir=DIR|DIR/model.keras [--split=val|test|train]
    cskd-eval --workdir=MODEL.keras --config=configs/NAME.py [--config.F=V ...] [--split=...]
    cskd-eval --saved_model=saved_models/NAME/N [--config=configs/NAME.py [--config.F=V ...]]
              [--split=...]

With --workdir the metrics are recomputed as cskd-train writes them to metrics.json,
temperature scaling included: T is fitted on the run's val split only and ece_ts, nll_ts
and temperature_ts are added to every split (none without a val split, as under
config.protocol=paper).

A .keras file outside a run folder (e.g. saved after training from Python) is evaluated
on the data --config describes (required), at the model's input size and pixel range
(``CSKDModel(pixel_max=...)``), with the same metrics.

With --saved_model the images go through the export's serving signatures (its in-graph
preprocessing included); the data config is the training config stored in the export,
or --config when given (it must describe the same classes). No temperature scaling there.
"""

from __future__ import annotations

import json
import sys

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "A cskd-train workdir, or the model.keras file in one "
                    "(evaluates that saved model).")
flags.DEFINE_string("saved_model", None, "A cskd-export version folder (saved_models/NAME/N) "
                    "to evaluate instead of a workdir.")
config_flags.DEFINE_config_file("config", None, "With --saved_model: the data config "
                                "(configs/*.py); default: the config stored in the export. "
                                "With a standalone .keras --workdir: required.",
                                lock_config=True)
flags.DEFINE_string("split", "", "One split to evaluate; default: every split of the run.")
FLAGS = flags.FLAGS


def _evaluate(model, config, pixel_max=1.0, facts=None):
    """evaluate_splits on the config's data, restricted to --split when given."""
    from cskd_tf import data as data_lib
    from cskd_tf.errors import ConfigError
    from cskd_tf.training.trainer import evaluate_splits

    info, splits = data_lib.prepare(config)
    if facts is not None:
        _check_model_fits(facts, info)
    if "val" not in splits:
        from cskd_tf.evaluation.calibration import NO_VAL_NOTE
        print(f"note: {NO_VAL_NOTE}", file=sys.stderr)
    if FLAGS.split:
        if FLAGS.split not in splits:
            raise ConfigError(f"--split={FLAGS.split} is not a split of {config.dataset}; "
                              f"choose one of: {', '.join(sorted(splits))}")
        with config.unlocked():
            config.eval_splits = (FLAGS.split,)
    return evaluate_splits(model, config, info, splits, pixel_max=pixel_max)


def _check_model_fits(facts, info):
    """ConfigError when a standalone model's classes or channels do not fit the data."""
    from cskd_tf.errors import ConfigError

    class_names = facts["class_names"]
    if facts["image_shape"][-1] != info.image_shape[-1]:
        raise ConfigError(f"the model takes {facts['image_shape'][-1]}-channel images and "
                          f"{info.name} has {info.image_shape[-1]}; pass the --config the "
                          "model was trained on")
    if len(class_names) != info.num_classes:
        raise ConfigError(f"the model has {len(class_names)} classes and {info.name} has "
                          f"{info.num_classes}; pass the --config (dataset, data_dir, "
                          "max_classes) the model was trained on")
    if [str(c) for c in class_names] != [str(c) for c in info.class_names] and \
            list(class_names) != [str(c) for c in range(len(class_names))]:
        print(f"warning: the model's class names ({', '.join(class_names[:3])}, ...) differ "
              f"from {info.name}'s ({', '.join(map(str, info.class_names[:3]))}, ...); "
              "labels are compared by index", file=sys.stderr)


def _evaluate_workdir():
    from cskd_tf.training.restore import restore_from_workdir

    config, _, model = restore_from_workdir(FLAGS.workdir)
    return _evaluate(model, config)


def _evaluate_keras_file():
    """A .keras file outside a run folder, on the data --config describes."""
    from cskd_tf import runtime
    from cskd_tf import signatures as sig
    from cskd_tf.errors import ConfigError
    from cskd_tf.training.restore import load_keras_file

    config = common.load_config(FLAGS.config)
    runtime.setup(config)
    model = load_keras_file(FLAGS.workdir)
    if not hasattr(model, "forward") or not hasattr(model, "backbone"):
        raise ConfigError(f"{FLAGS.workdir} holds a {type(model).__name__}, not a cskd_tf "
                          "CSKDModel; cskd-eval evaluates CSKDModels")
    facts = sig.model_facts(model)
    with config.unlocked():
        # The model's input size, whatever the config says.
        config.image_size = int(facts["image_shape"][0])
    return _evaluate(model, config, pixel_max=facts["pixel_max"], facts=facts)


def _evaluate_saved_model():
    from cskd_tf.serving import ServingError
    from cskd_tf.serving.evaluate import data_differences, evaluate_export
    from cskd_tf.serving.loading import ExportedModel

    exported = ExportedModel(FLAGS.saved_model)
    if FLAGS.config is not None:
        config = common.load_config(FLAGS.config)
        try:
            differing = data_differences(config, exported.training_config())
        except ServingError:  # a SavedModel without cskd assets: nothing to compare with
            differing = []
        if differing:
            print(f"warning: --config differs from the export's training config in "
                  f"{', '.join(differing)}; the splits may hold other examples",
                  file=sys.stderr)
    else:
        config = exported.training_config()
    return evaluate_export(exported, config, [FLAGS.split] if FLAGS.split else None)


def main(argv):
    from cskd_tf.errors import ConfigError

    del argv
    if bool(FLAGS.workdir) == bool(FLAGS.saved_model):
        raise ConfigError("pass either --workdir=DIR (a directory written by cskd-train) or "
                          "--saved_model=saved_models/NAME/N (a cskd-export version)")
    from cskd_tf.runs import is_standalone_keras_file

    standalone = bool(FLAGS.workdir) and is_standalone_keras_file(FLAGS.workdir)
    if standalone and FLAGS.config is None:
        raise ConfigError(f"{FLAGS.workdir} is a .keras file outside a cskd-train run, so "
                          "nothing says which data to evaluate it on; pass --config="
                          "configs/NAME.py with --config.dataset=... --config.data_dir=...")
    if FLAGS.workdir and not standalone and FLAGS.config is not None:
        raise ConfigError("--config is only used with --saved_model or a standalone .keras "
                          "file; a workdir has its own")
    if standalone:
        results = _evaluate_keras_file()
    else:
        results = _evaluate_workdir() if FLAGS.workdir else _evaluate_saved_model()
    print(json.dumps(results, indent=2, sort_keys=True))


def run():
    common.run(main)


if __name__ == "__main__":
    run()

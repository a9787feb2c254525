"""cskd-plot: the paper's figures for trained runs.

    cskd-plot KIND --workdir=DIR [--workdir=DIR2 ...] --output=FILE.png [options]

KIND is one of

    reliability    reliability diagram per run, ECE in the title  [--num_bins=15]
                   [--temperature_scaling: each run before and after temperature scaling,
                   T fitted on its val split, side by side]
    tsne           t-SNE of penultimate features (Figure 3)       [--classes=10 --max_per_class=100]
    misclassified  mean top-k softmax scores of misclassified samples (Figure 2)  [--topk=5]
    curves         training curves from history.csv / TensorBoard [--metrics=... --source=auto]
    hierarchy      domain confusion of a mixed dataset (Figure 4) --domains=cifar:0-9,digits:10-19

All but ``curves`` load each run's last checkpoint and predict on --split
(default val). Panels are named after the run's method (CE, CS-KD, ...)
unless --labels=A,B,... is given, one per --workdir.
"""

from __future__ import annotations

import json
import os

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags

KINDS = ("reliability", "tsne", "misclassified", "curves", "hierarchy")

flags.DEFINE_multi_string("workdir", [], "A cskd-train workdir; repeat for side-by-side panels.")
flags.DEFINE_string("output", "", "Image file to write (.png, .pdf or .svg).")
flags.DEFINE_string("split", "val", "Split to predict on (not used by curves).")
flags.DEFINE_list("labels", [], "Panel names, one per --workdir; default: the method names.")
flags.DEFINE_integer("num_bins", 15, "reliability: confidence bins.")
flags.DEFINE_bool("temperature_scaling", False, "reliability: draw each run before and after "
                  "temperature scaling (T fitted on the run's val split only), side by side.")
flags.DEFINE_integer("classes", 10, "tsne: number of classes shown.")
flags.DEFINE_integer("max_per_class", 100, "tsne: samples per class at most (0 = all).")
flags.DEFINE_float("perplexity", 30.0, "tsne: perplexity (capped for small sets).")
flags.DEFINE_integer("topk", 5, "misclassified: number of sorted scores shown.")
flags.DEFINE_list("metrics", ["loss", "accuracy", "val_accuracy", "val_ece"],
                  "curves: history columns, one panel each.")
flags.DEFINE_enum("source", "auto", ["auto", "csv", "tensorboard"],
                  "curves: read history.csv, the TensorBoard events, or csv when present.")
flags.DEFINE_string("domains", "", "hierarchy: NAME:FIRST-LAST,... (inclusive class ranges), "
                    "a JSON object {name: \"0-9\" or [classes]}, or a file holding one.")
flags.DEFINE_integer("seed", 0, "tsne: seed of the class choice, subsampling and t-SNE.")
FLAGS = flags.FLAGS

USAGE = ("usage: cskd-plot KIND --workdir=DIR [--workdir=DIR2 ...] --output=FILE.png, "
         f"KIND one of {', '.join(KINDS)}")


def _check_workdirs(workdirs):
    from cskd_tf.errors import ConfigError, WorkdirError

    if not workdirs:
        raise ConfigError(f"--workdir is required; {USAGE}")
    for path in workdirs:
        if not os.path.isdir(path):
            raise WorkdirError(f"--workdir {path} does not exist")
        if not os.path.exists(os.path.join(path, "config.json")):
            raise WorkdirError(f"--workdir {path} holds no training run (no config.json)")


def _panel_names(workdirs, labels):
    """--labels, or the runs' method names made unique with the folder name."""
    from cskd_tf.errors import ConfigError
    from cskd_tf.evaluation.report import method_name

    if labels:
        if len(labels) != len(workdirs):
            raise ConfigError(f"--labels has {len(labels)} names for {len(workdirs)} workdirs")
        return list(labels)
    names = []
    for path in workdirs:
        with open(os.path.join(path, "config.json")) as f:
            names.append(method_name(str(json.load(f).get("method", "?"))))
    for i, name in enumerate(names):
        if names.count(name) > 1:
            names[i] = f"{name} ({os.path.basename(os.path.normpath(workdirs[i]))})"
    return names


def _data_facts(path):
    from cskd_tf.errors import WorkdirError

    facts_path = os.path.join(path, "data.json")
    if not os.path.exists(facts_path):
        raise WorkdirError(f"{facts_path} is missing; the run in {path} has not started training")
    with open(facts_path) as f:
        return json.load(f)


def _run_outputs(path, split, fit_split=None):
    """(data facts, logits, features, labels) of a trained run on one split, and the
    temperature fitted on ``fit_split`` when it is given (else None)."""
    from cskd_tf import data as data_lib
    from cskd_tf.errors import ConfigError
    from cskd_tf.evaluation.inference import logits_and_features
    from cskd_tf.training.restore import restore_from_workdir

    config, facts, model = restore_from_workdir(path)
    info, splits = data_lib.prepare(config)
    if split not in splits:
        raise ConfigError(f"--split={split} is not a split of {config.dataset}; choose one of: "
                          f"{', '.join(sorted(splits))}")
    logits, features, labels = logits_and_features(
        model, data_lib.eval_dataset(config, info, splits[split]))
    temperature = None
    if fit_split:
        from cskd_tf.evaluation.calibration import fit_temperature

        if fit_split not in splits:
            raise ConfigError(f"--temperature_scaling: {path} has no {fit_split} split to fit "
                              f"the temperature on (config.protocol={config.protocol!r}); T "
                              "is never fitted on test, so drop --temperature_scaling")
        if fit_split == split:
            fit_logits, fit_labels = logits, labels
        else:
            fit_logits, _, fit_labels = logits_and_features(
                model, data_lib.eval_dataset(config, info, splits[fit_split]))
        temperature = fit_temperature(fit_logits, fit_labels)
    return facts, logits, features, labels, temperature


def main(argv):
    from cskd_tf.errors import ConfigError

    if len(argv) != 2 or argv[1] not in KINDS:
        given = " ".join(argv[1:]) or "nothing"
        raise ConfigError(f"expected one KIND, got {given}; {USAGE}")
    kind = argv[1]
    if not FLAGS.output:
        raise ConfigError(f"--output=FILE.png is required; {USAGE}")
    common.check_output_file(FLAGS.output, suffixes=(".png", ".pdf", ".svg"))
    workdirs = list(FLAGS.workdir)
    _check_workdirs(workdirs)
    names = _panel_names(workdirs, FLAGS.labels)

    from cskd_tf.evaluation import plots

    if kind == "curves":
        from cskd_tf.evaluation.history import load_history

        histories = [(n, load_history(p, FLAGS.source)) for n, p in zip(names, workdirs)]
        try:
            plots.plot_curves(histories, FLAGS.output, keys=tuple(FLAGS.metrics))
        except ValueError as error:  # no requested column was logged: a flag problem
            raise ConfigError(f"--metrics: {error}") from None
        print(f"wrote {FLAGS.output}")
        return

    if kind == "hierarchy":
        from cskd_tf.evaluation.domains import class_to_domain, parse_domains

        domains = parse_domains(FLAGS.domains)
        # Checked against every run before any model is loaded, so a bad
        # --domains fails in a second rather than after predicting.
        for path in workdirs:
            class_to_domain(domains, int(_data_facts(path)["num_classes"]))

    from cskd_tf.evaluation.metrics import softmax

    if FLAGS.temperature_scaling and kind != "reliability":
        raise ConfigError("--temperature_scaling is an option of cskd-plot reliability only")
    panels, temperatures = [], []
    for name, path in zip(names, workdirs):
        facts, logits, features, labels, temperature = _run_outputs(
            path, FLAGS.split, "val" if FLAGS.temperature_scaling else None)
        panels.append((name, facts, logits, features, labels))
        temperatures.append(temperature)

    if kind == "reliability":
        if FLAGS.temperature_scaling:
            drawn = [p for (n, _, z, _, y), t in zip(panels, temperatures)
                     for p in plots.temperature_scaling_panels(n, z, y, t)]
        else:
            drawn = [(n, softmax(z), y) for n, _, z, _, y in panels]
        eces = plots.plot_reliability(drawn, FLAGS.output, num_bins=FLAGS.num_bins,
                                      max_cols=2 if FLAGS.temperature_scaling else 4)
        for (title, *_), ece in zip(drawn, eces):
            print(f"{title}: ECE {ece:.2f}% ({FLAGS.split})")
    elif kind == "misclassified":
        plots.plot_misclassified([(n, softmax(z), y) for n, _, z, _, y in panels],
                                 FLAGS.output, k=FLAGS.topk)
    elif kind == "tsne":
        if FLAGS.classes < 1:
            raise ConfigError(f"--classes must be >= 1 (got {FLAGS.classes})")
        plots.plot_tsne([(n, f, y) for n, _, _, f, y in panels], FLAGS.output,
                        num_classes=FLAGS.classes, seed=FLAGS.seed,
                        max_per_class=FLAGS.max_per_class, perplexity=FLAGS.perplexity,
                        class_names=panels[0][1].get("class_names"))
    elif kind == "hierarchy":
        from cskd_tf.evaluation.domains import domain_confusion

        matrices = []
        for name, facts, logits, _, labels in panels:
            matrix = domain_confusion(labels, logits.argmax(axis=1), domains,
                                      int(facts["num_classes"]))
            matrices.append((name, matrix))
            print(f"{name}: rows = true domain, columns = predicted domain (%)")
            for (domain, _), row in zip(domains, matrix):
                print(f"  {domain:>12s}: " + "  ".join(f"{v:6.2f}" for v in row))
        plots.plot_domain_confusion(matrices, [d for d, _ in domains], FLAGS.output)
    print(f"wrote {FLAGS.output}")


def run():
    common.run(main)


if __name__ == "__main__":
    run()

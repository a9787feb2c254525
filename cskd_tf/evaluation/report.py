"""Result tables in the CS-KD paper's layout from finished ``cskd-train`` runs.

A run directory holds ``config.json`` and, once training finished,
``metrics.json`` (see :mod:`cskd_tf.runs`). Runs are grouped by
``dataset x model x method`` (a precision other than float32 is part of the
model, :func:`cskd_tf.runs.model_label`) and their seeds aggregated as mean ± std.
Two tables come out (Yun et al., CVPR 2020):

* Table 1 style, one per model: top-1 error per method (rows) and dataset
  (columns), with the relative change from cross-entropy in parentheses,
  e.g. ``21.99 ± 0.13 (−8.8%)``;
* Table 6 style, one per dataset and model: top-1 / top-5 error, ECE, ECE
  after temperature scaling (fitted on val, :mod:`.calibration`; "–" for runs
  without a val split) and Recall@1 per method.

Which model of a run is reported (``selection``): ``final``, the model at the
end of training, as metrics.json holds it (the default); or
``best_test_epoch``, the epoch with the best test accuracy in history.csv —
the number the reference code (alinlab/cs-kd train.py) prints, selected on
test itself, so every table says so. Only runs trained with
``config.protocol = "paper"`` log per-epoch test metrics.

The best value of each column is marked (bold). A group with a run that has
not finished is shown as ``incomplete (k/n runs finished)`` rather than left
out, so a half-finished sweep never looks complete. Only JSON (and CSV) is
read here: no TensorFlow import, so reports are instant.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from cskd_tf.errors import ConfigError
from cskd_tf.evaluation import table_format
from cskd_tf.evaluation.runs import select_best_test_epoch
from cskd_tf.evaluation.seed_stats import Stat, mean_std, relative_change
from cskd_tf.registry import METHODS, SOURCES
from cskd_tf.runs import Run, find_run_dirs, load_run

__all__ = ["Group", "Run", "SELECTIONS", "Stat", "build_report", "choose_split", "csv_report",
           "find_run_dirs", "group_runs", "load_run", "mean_std", "relative_change",
           "select_best_test_epoch", "table1", "table6"]

BASELINE = "ce"

# Row order of the paper: the baselines and regularisers of Table 1, the self-distillation
# methods, CS-KD, then the combinations with Mixup and KD (Table 5). Other methods come
# last, alphabetically. The names printed are the methods' own display names
# (cskd_tf.registry.METHODS, read without importing the method modules).
METHOD_ORDER = ("ce", "adacos", "virtual_softmax", "max_entropy", "label_smoothing", "ddgsd",
                "byot", "cskd", "cskd_e", "mixup", "mixup_cskd", "kd", "kd_cskd")
_METHOD_RANK = {name: i for i, name in enumerate(METHOD_ORDER)}

# Column titles of the TFDS members in the paper (the tfds: family is one registry entry)
# and of "cifar100"; the other sources' titles are their registry display names.
TFDS_TITLES = {
    "tfds:cifar100": "CIFAR-100",
    "cifar100": "CIFAR-100",
    "tfds:caltech_birds2011": "CUB-200-2011",
    "tfds:stanford_dogs": "Stanford Dogs",
    "tfds:imagenet2012": "ImageNet",
}
# The paper's column order; other datasets come last, alphabetically.
DATASET_ORDER = ("tfds:cifar100", "cifar100", "tinyimagenet", "tfds:caltech_birds2011",
                 "tfds:stanford_dogs", "mit67", "tfds:imagenet2012", "digits", "fashion_mnist")
_DATASET_RANK = {name: i for i, name in enumerate(DATASET_ORDER)}

# (key in metrics.json, column title, lower is better? None: no "best")
METRICS = (
    ("top1_error", "Top-1 error", True),
    ("top5_error", "Top-5 error", True),
    ("ece", "ECE", True),
    ("ece_ts", "ECE after TS", True),
    ("recall_at_1", "R@1", False),
)
CSV_METRICS = METRICS + (("nll", "NLL", True), ("nll_ts", "NLL after TS", True),
                         ("temperature_ts", "TS temperature", None))

# selection -> how the captions name it.
SELECTIONS = {
    "final": "final model",
    "best_test_epoch": ("best test epoch of each run, i.e. selected on test as the reference "
                        "code does (optimistic)"),
}

# Config fields that may differ between seeds of one group without making
# them different experiments: where data lives, how fast it runs, logging
# (mixed_precision: the policy it resolved to is in the model label).
_FREE_FIELDS = {"seed", "verbose", "data_dir", "cache_dir", "jit_compile", "mixed_precision",
                "distribution", "steps_per_execution", "deterministic", "eval_batch_size",
                "eval_splits", "checkpoint_every_epochs", "search"}


def method_names() -> dict:
    """{registered method name: display name}, every method (registered or declared)."""
    return {e.name: e.display_name for e in METHODS.entries(declared=True)}


def method_name(method: str) -> str:
    return method_names().get(method, method)


def dataset_name(dataset: str) -> str:
    """Column title; a subset suffix such as " (max_classes=10)" is kept."""
    base, sep, subset = dataset.partition(" (")
    titles = {e.name: e.display_name for e in SOURCES.entries(declared=True) if not e.family}
    return (TFDS_TITLES.get(base) or titles.get(base, base)) + sep + subset


def _dataset_order(dataset: str):
    base = dataset.partition(" (")[0]
    return (_DATASET_RANK.get(base, len(_DATASET_RANK)), dataset)


def _method_order(method: str):
    return (_METHOD_RANK.get(method, len(_METHOD_RANK)), method)


# --------------------------------------------------------------------------
# Aggregation.
# --------------------------------------------------------------------------


@dataclass
class Group:
    dataset: str
    model: str
    method: str
    runs: list = field(default_factory=list)

    @property
    def finished(self) -> list:
        return [r for r in self.runs if r.finished]

    @property
    def complete(self) -> bool:
        return len(self.finished) == len(self.runs)

    @property
    def status(self) -> str:
        if self.complete:
            return "complete"
        return f"incomplete ({len(self.finished)}/{len(self.runs)} runs finished)"

    def stat(self, split: str, metric: str) -> Stat | None:
        return mean_std(r.metrics.get(split, {}).get(metric) for r in self.finished)

    def notes(self) -> list:
        """Warnings about runs that were perhaps not meant to be averaged."""
        notes = []
        seeds = [r.seed for r in self.runs]
        dupes = sorted({s for s in seeds if seeds.count(s) > 1})
        if dupes:
            notes.append(f"{len(self.runs)} runs but seed(s) {', '.join(map(str, dupes))} "
                         "repeat; are some of them copies?")
        differing = sorted({k for r in self.runs for k in r.config
                            if k not in _FREE_FIELDS
                            and json.dumps(r.config.get(k), sort_keys=True)
                            != json.dumps(self.runs[0].config.get(k), sort_keys=True)})
        if differing:
            notes.append(f"runs differ in config field(s) {', '.join(differing)} "
                         "but are averaged together")
        return [f"{dataset_name(self.dataset)} / {self.model} / {method_name(self.method)}: {n}"
                for n in notes]


def group_runs(runs) -> dict:
    """{(dataset, model, method): Group}, in the paper's order."""
    groups = {}
    for run in runs:
        key = (run.dataset, run.model, run.method)
        groups.setdefault(key, Group(*key)).runs.append(run)
    order = sorted(groups, key=lambda k: (_dataset_order(k[0]), k[1], _method_order(k[2])))
    return {k: groups[k] for k in order}


def choose_split(runs, requested: str = "") -> str:
    """``requested`` if every finished run has it, else test, else val."""
    finished = [r for r in runs if r.finished]
    if requested:
        lacking = [r.path for r in finished if requested not in r.metrics]
        if lacking:
            raise ConfigError(f"--split={requested}: {len(lacking)} finished run(s) have no "
                              f"{requested} metrics, e.g. {lacking[0]}")
        return requested
    for split in ("test", "val"):
        if finished and all(split in r.metrics for r in finished):
            return split
    if not finished:
        return "test"
    raise ConfigError("the finished runs share neither test nor val metrics; "
                      "pick a split with --split")


# --------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------


def _fmt_stat(stat: Stat) -> str:
    # One run has no spread to report; "± 0.00" would claim one.
    return f"{stat.mean:.2f}" if stat.n == 1 else f"{stat.mean:.2f} ± {stat.std:.2f}"


def _fmt_change(change: float) -> str:
    sign = "−" if change < 0 else "+"  # U+2212, as the paper typesets it
    return f"({sign}{abs(change):.1f}%)"


def _best(stats: dict, lower_is_better: bool):
    """Keys of the best mean among complete groups (several on a tie)."""
    if lower_is_better is None:
        return set()
    values = {k: s.mean for k, s in stats.items() if s is not None}
    if len(values) < 2:  # a lone entry is not "best" of anything
        return set()
    target = min(values.values()) if lower_is_better else max(values.values())
    return {k for k, v in values.items() if round(v, 2) == round(target, 2)}


def _cell_stats(group: Group | None, split: str, metric: str):
    if group is None or not group.complete:
        return None
    return group.stat(split, metric)


def _status_cell(group: Group | None, stat: Stat | None) -> str:
    if group is None:
        return "–"
    if not group.complete:
        return group.status
    return "–" if stat is None else _fmt_stat(stat)


def _selection_phrase(split: str, selection: str) -> str:
    return f"{split} split" + ("" if selection == "final" else f", {SELECTIONS[selection]}")


def _title(name: str, selection: str) -> str:
    return name if selection == "final" else f"{name} [test-selected: best test epoch]"


def table1(groups: dict, split: str, selection: str = "final") -> list:
    """Top-1 error per method x dataset, one table per model."""
    tables = []
    for model in sorted({k[1] for k in groups}):
        datasets = sorted({k[0] for k in groups if k[1] == model}, key=_dataset_order)
        methods = sorted({k[2] for k in groups if k[1] == model}, key=_method_order)
        rows = [[table_format.Cell(method_name(m))] for m in methods]
        for dataset in datasets:
            cells = {m: groups.get((dataset, model, m)) for m in methods}
            stats = {m: _cell_stats(g, split, "top1_error") for m, g in cells.items()}
            best = _best(stats, lower_is_better=True)
            base = stats.get(BASELINE)
            for row, m in zip(rows, methods):
                text = _status_cell(cells[m], stats[m])
                if stats[m] is not None and m != BASELINE and base is not None:
                    change = relative_change(stats[m].mean, base.mean)
                    if change is not None:
                        text += f" {_fmt_change(change)}"
                row.append(table_format.Cell(text, bold=m in best))
        seeds = _seed_phrase([g for k, g in groups.items() if k[1] == model])
        caption = (f"Top-1 error (%) of {model} on the {_selection_phrase(split, selection)}, "
                   f"{seeds}; in parentheses the relative change from cross-entropy; best per "
                   "dataset in bold.")
        tables.append(table_format.Table(_title(f"Table 1 ({model})", selection), caption,
                                   ["Method"] + [dataset_name(d) for d in datasets], rows))
    return tables


def table6(groups: dict, split: str, selection: str = "final") -> list:
    """Top-1, top-5, ECE, ECE after TS and R@1 per method, one table per dataset x model."""
    tables = []
    for dataset, model in sorted({(k[0], k[1]) for k in groups},
                                  key=lambda k: (_dataset_order(k[0]), k[1])):
        methods = sorted({k[2] for k in groups if k[:2] == (dataset, model)}, key=_method_order)
        cells = {m: groups[(dataset, model, m)] for m in methods}
        rows = [[table_format.Cell(method_name(m))] for m in methods]
        for metric, _, lower in METRICS:
            stats = {m: _cell_stats(g, split, metric) for m, g in cells.items()}
            best = _best(stats, lower)
            for row, m in zip(rows, methods):
                row.append(table_format.Cell(_status_cell(cells[m], stats[m]), bold=m in best))
        header = ["Method"] + [f"{title} {'↓' if lower else '↑'}" for _, title, lower in METRICS]
        caption = (f"{dataset_name(dataset)}, {model}, {_selection_phrase(split, selection)}, "
                   f"{_seed_phrase(cells.values())}: errors, ECE and Recall@1 in %; ECE after "
                   "TS: temperature scaling fitted on val only (– without a val split); "
                   "best per column in bold.")
        tables.append(table_format.Table(
            _title(f"Table 6 ({dataset_name(dataset)}, {model})", selection), caption, header,
            rows))
    return tables


def _seed_phrase(groups) -> str:
    counts = sorted({len(g.finished) for g in groups if g.complete})
    if not counts:
        return "no complete group"
    if counts == [1]:
        return "one run each"
    if len(counts) == 1:
        return f"mean ± std over {counts[0]} seeds"
    return (f"mean ± std over {counts[0]}–{counts[-1]} seeds per method "
            "(no ± where there is one run)")


def csv_report(groups: dict, split: str, selection: str = "final") -> str:
    """One row per group with every number (means over the finished runs).

    Unlike the text tables, the numbers of an incomplete group are kept here
    (with ``status`` saying so), because a CSV feeds further analysis.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["dataset", "model", "method", "split", "selection", "status", "runs_finished",
              "runs_total"]
    for metric, _, _ in CSV_METRICS:
        header += [f"{metric}_mean", f"{metric}_std", f"{metric}_best"]
    header.append("top1_error_change_from_ce_pct")
    writer.writerow(header)
    best = {}
    for dataset, model in {(k[0], k[1]) for k in groups}:
        members = {k: g for k, g in groups.items() if k[:2] == (dataset, model)}
        for metric, _, lower in CSV_METRICS:
            stats = {k: _cell_stats(g, split, metric) for k, g in members.items()}
            for k in _best(stats, lower):
                best.setdefault(k, set()).add(metric)
    for key, group in groups.items():
        row = [group.dataset, group.model, group.method, split, selection,
               "complete" if group.complete else "incomplete",
               len(group.finished), len(group.runs)]
        for metric, _, _ in CSV_METRICS:
            stat = group.stat(split, metric)
            row += ["" if stat is None else f"{stat.mean:.4f}",
                    "" if stat is None else f"{stat.std:.4f}",
                    int(metric in best.get(key, ()))]
        base = groups.get((group.dataset, group.model, BASELINE))
        base_stat = base.stat(split, "top1_error") if base is not None else None
        stat = group.stat(split, "top1_error")
        change = (relative_change(stat.mean, base_stat.mean)
                  if stat is not None and base_stat is not None and group.method != BASELINE
                  else None)
        row.append("" if change is None else f"{change:.2f}")
        writer.writerow(row)
    return out.getvalue()


def build_report(paths, fmt: str = "markdown", split: str = "",
                 selection: str = "final") -> str:
    """The whole report for run directories (or folders of them) as text."""
    if fmt not in table_format.FORMATS + ("csv",):
        raise ConfigError(f"--format={fmt} is not one of markdown, csv, latex")
    if split and split not in ("test", "val", "train"):
        raise ConfigError(f"--split={split} is not one of test, val, train")
    if selection not in SELECTIONS:
        raise ConfigError(f"--selection={selection} is not one of {', '.join(SELECTIONS)}")
    if selection == "best_test_epoch" and split not in ("", "test"):
        raise ConfigError(f"--selection=best_test_epoch reports the test split; drop "
                          f"--split={split} or use --selection=final")
    runs = [load_run(p) for p in find_run_dirs(paths)]
    if selection == "best_test_epoch":
        runs = [select_best_test_epoch(r) for r in runs]
    split = choose_split(runs, split)
    groups = group_runs(runs)
    if fmt == "csv":
        return csv_report(groups, split, selection)
    tables = table1(groups, split, selection) + table6(groups, split, selection)
    notes = [n for g in groups.values() for n in g.notes()]
    if selection == "best_test_epoch":
        epochs = sorted(r.metrics["test"]["epoch"] for r in runs if r.finished)
        notes.insert(0, "TEST-SELECTED: each run is reported at the epoch with its best test "
                     "accuracy (history.csv), as the reference code alinlab/cs-kd prints it; "
                     "this picks the model on the test split and overstates accuracy. "
                     "--selection=final (the default) reports the final model"
                     + (f"; chosen epochs {epochs[0]}–{epochs[-1]}" if epochs else "") + ".")
    unfinished = [r.path for r in runs if not r.finished]
    if unfinished:
        notes.append(f"{len(unfinished)} of {len(runs)} runs unfinished (no metrics.json): "
                     + ", ".join(unfinished))
    return table_format.render(tables, fmt, notes)

"""Finding ``cskd-train`` run directories and reading their JSON files.

Only JSON (and history.csv, for the best-test-epoch selection) is read, no TensorFlow, so
listing and reporting runs is instant.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from cskd_tf import config as config_lib
from cskd_tf.errors import ConfigError, WorkdirError
from cskd_tf.evaluation.history import best_epoch_metrics, read_history_csv


def find_run_dirs(paths) -> list:
    """Every directory under ``paths`` (or one of them) that holds config.json.

    A run directory is not searched further: its ``checkpoints/`` and
    ``tensorboard/`` never hold runs. Raises WorkdirError for a path that does
    not exist or contains no run at all, since an empty table would hide a
    typo.
    """
    found = []
    for path in paths:
        if not os.path.exists(path):
            raise WorkdirError(f"{path} does not exist; pass run directories written by "
                               "cskd-train (or folders containing them)")
        if not os.path.isdir(path):
            raise WorkdirError(f"{path} is not a directory; pass run directories written by "
                               "cskd-train (or folders containing them)")
        before = len(found)
        for root, dirs, files in os.walk(path):
            if "config.json" in files:
                found.append(os.path.abspath(root))
                dirs[:] = []
            else:
                dirs.sort()  # a stable order whatever the file system returns
        if len(found) == before:
            raise WorkdirError(f"{path} holds no training run (no config.json below it)")
    # A parent and its child given together would list runs twice.
    return sorted(set(found))


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise WorkdirError(f"{path} is not valid JSON ({error})") from None


# Config fields that make a run's data a subset of its dataset (the budgeted
# protocols): runs on different subsets are different experiments.
SUBSET_FIELDS = ("max_classes", "max_train_per_class")


def dataset_label(config: dict) -> str:
    """``config.dataset``, plus the subset fields that are set, e.g.
    ``tinyimagenet (max_train_per_class=10)``."""
    subset = [f"{k}={config[k]}" for k in SUBSET_FIELDS if config.get(k)]
    return str(config["dataset"]) + (f" ({', '.join(subset)})" if subset else "")


def recorded_precision(path: str, mixed_precision: str) -> str | None:
    """The Keras policy the run in ``path`` trained under.

    ``data.json``'s ``"runtime": {"precision": ...}``, written when training starts; for a
    run from before that record, what its ``config.mixed_precision`` (``mixed_precision``)
    names: ``""`` or ``float32`` -> float32. None: ``auto`` without a record yet, i.e. a run
    that has not started training.
    """
    facts_path = os.path.join(path, "data.json")
    facts = _read_json(facts_path) if os.path.exists(facts_path) else {}
    runtime = facts.get("runtime") if isinstance(facts, dict) else None
    if isinstance(runtime, dict) and runtime.get("precision"):
        return str(runtime["precision"])
    return config_lib.fixed_precision(mixed_precision)


def model_label(config: dict, precision: str) -> str:
    """``config.model``, plus the precision unless float32, e.g. ``preact_resnet18
    (mixed_bfloat16)``: runs of different precision are different experiments, never
    averaged together (a run with ``auto`` that has not started training: ``(auto)``)."""
    model = str(config["model"])
    return model if precision == "float32" else f"{model} ({precision})"


@dataclass
class Run:
    """One run directory: the fields that group it, and its metrics if finished."""

    path: str
    dataset: str
    model: str  # model_label: the architecture, with the precision unless float32
    method: str
    seed: int
    config: dict
    metrics: dict | None  # None: metrics.json not written yet, i.e. unfinished
    # The Keras policy it trained under (recorded_precision); "auto": not started yet.
    precision: str = "float32"

    @property
    def finished(self) -> bool:
        return self.metrics is not None


def load_run(path: str) -> Run:
    """The run in ``path``; metrics is None until metrics.json exists (unfinished)."""
    config = _read_json(os.path.join(path, "config.json"))
    if not isinstance(config, dict):
        raise WorkdirError(f"{path}/config.json does not hold a config object")
    # A run written before a field existed compares equal to one written with that field's
    # default: read it as resuming does (config.from_json, below).
    missing = [k for k in ("dataset", "model", "method") if k not in config]
    if missing:
        raise WorkdirError(f"{path}/config.json lacks {', '.join(missing)}; "
                           "was it written by cskd-train?")
    # from_json fills defaults at every depth (a field added to a method group too).
    config = json.loads(config_lib.to_json(config_lib.from_json(json.dumps(config))))
    metrics_path = os.path.join(path, "metrics.json")
    metrics = _read_json(metrics_path) if os.path.exists(metrics_path) else None
    if metrics is not None and not (isinstance(metrics, dict)
                                    and all(isinstance(v, dict) for v in metrics.values())):
        raise WorkdirError(f"{metrics_path} is not a {{split: {{metric: value}}}} object")
    precision = recorded_precision(path, config["mixed_precision"]) or "auto"
    return Run(path=path, dataset=dataset_label(config), model=model_label(config, precision),
               method=str(config["method"]), seed=int(config.get("seed", 0)), config=config,
               metrics=metrics, precision=precision)


def select_best_test_epoch(run: Run) -> Run:
    """``run`` with its test metrics taken from its best test epoch (history.csv)."""
    if not run.finished:
        return run
    path = os.path.join(run.path, "history.csv")
    try:
        history = read_history_csv(path)
        metrics = best_epoch_metrics(history, "test", where=path)
    except WorkdirError as error:
        raise ConfigError(f"--selection=best_test_epoch: {error}") from None
    return dataclasses.replace(run, metrics={"test": metrics})

"""The trial table (DIR/trials.csv and the terminal), DIR/best.json and DIR/summary.json.

Rows come from the oracle's trials (hyperparameters, status, metrics) and
from the small record each trial writes next to its Keras Tuner files
(``trial_<id>/cskd_trial.json``: seconds, which tuner ran it, the error of a
failed trial), because Keras Tuner passes neither time nor error messages
from a distributed worker to the chief.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

from cskd_tf.runs import write_json_atomic

RECORD_NAME = "cskd_trial.json"

METRICS = ("val_accuracy", "val_top5_accuracy", "val_ece", "val_nll", "val_recall_at_1",
           "val_error_plus_ece", "used_lambda_cls", "used_temperature")
COLUMNS = ("trial_id", "status", "lambda_cls", "temperature", "learning_rate", "weight_decay",
           "epochs", "initial_epoch", "from_trial", "bracket", "round", "objective", *METRICS,
           "seconds", "tuner_id", "precision", "best", "error")


def write_record(trial_dir: str, payload: dict):
    """What the process running a trial knows about it and the oracle does not keep."""
    write_json_atomic(os.path.join(trial_dir, RECORD_NAME), payload)


def read_record(trial_dir: str) -> dict:
    try:
        with open(os.path.join(trial_dir, RECORD_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _sort_key(trial_id):
    return (0, int(trial_id)) if str(trial_id).isdigit() else (1, str(trial_id))


def last_line(message) -> str:
    """The exception line of a Keras Tuner trial message (which holds a whole traceback)."""
    lines = [line.strip() for line in str(message or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    # "<module path>.FailedTrialError: the loss ..." -> "the loss ..."
    head, sep, tail = last.partition(": ")
    return tail if sep and "Error" in head and " " not in head else last


def completed(trials, direction):
    """The trials that may be called best, best first (ties: the earlier trial).

    Completed, with a finite score, and trained for the most epochs any completed trial
    reached: Hyperband's short early rounds are not comparable with full-length runs,
    and best.json is retrained for config.num_epochs. (Random and Bayesian search train
    every trial for the same number of epochs, so this keeps all of them.)
    """
    done = [t for t in trials if t.status == "COMPLETED" and t.score is not None
            and math.isfinite(float(t.score))]
    if done:
        longest = max(_epochs(t) for t in done)
        done = [t for t in done if _epochs(t) == longest]
    sign = -1.0 if direction == "max" else 1.0
    return sorted(done, key=lambda t: (sign * float(t.score), _sort_key(t.trial_id)))


def _epochs(trial):
    # Without Hyperband's tuner/epochs every trial ran config.num_epochs: same for all.
    return int(trial.hyperparameters.values.get("tuner/epochs", 0))


def trial_rows(oracle, project_dir, space, direction):
    """One dict per trial (keys: COLUMNS), in trial-id order."""
    trials = sorted(oracle.trials.values(), key=lambda t: _sort_key(t.trial_id))
    ranked = completed(trials, direction)
    best_id = ranked[0].trial_id if ranked else None
    rows = []
    for trial in trials:
        values = trial.hyperparameters.values
        record = read_record(os.path.join(project_dir, f"trial_{trial.trial_id}"))
        row = dict.fromkeys(COLUMNS, "")
        row.update(trial_id=trial.trial_id, status=trial.status)
        for name in ("lambda_cls", "temperature", "learning_rate", "weight_decay"):
            # A field that is not searched shows the fixed value every trial used.
            row[name] = values.get(name, space.config[name])
        row["epochs"] = values.get("tuner/epochs", space.config.num_epochs)
        row["initial_epoch"] = values.get("tuner/initial_epoch", 0)
        row["from_trial"] = values.get("tuner/trial_id", "")
        row["bracket"] = values.get("tuner/bracket", "")
        row["round"] = values.get("tuner/round", "")
        if trial.status == "COMPLETED" and trial.score is not None:
            row["objective"] = float(trial.score)
        for name in METRICS:
            if trial.metrics.exists(name):
                row[name] = trial.metrics.get_last_value(name)
        row["seconds"] = record.get("seconds", "")
        row["tuner_id"] = record.get("tuner_id", "")
        row["precision"] = record.get("precision", "")
        row["best"] = 1 if trial.trial_id == best_id else 0
        if trial.status != "COMPLETED":
            row["error"] = record.get("error") or last_line(trial.message)
        rows.append(row)
    return rows


def _csv_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(path, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row[k]) for k in COLUMNS})
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)


def format_table(rows, space, objective, hyperband=False, distributed=False) -> str:
    """The trial table for the terminal: searched fields, objective, metrics, time, status."""
    columns = [("trial", "trial_id"), ("status", "status"), ("lambda", "lambda_cls"),
               ("T", "temperature")]
    columns += [(n, n) for n in ("learning_rate", "weight_decay") if n in space.names]
    if hyperband:
        columns += [("epochs", "epochs"), ("from", "from_trial")]
    columns += [(objective, "objective")]
    columns += [(n, n) for n in ("val_accuracy", "val_ece", "val_nll") if n != objective]
    columns += [("time_s", "seconds")]
    if distributed:
        columns += [("tuner", "tuner_id")]
    columns += [("error", "error")]

    def text(key, value):
        if value == "" or value is None:
            return ""
        if key == "seconds":
            return f"{float(value):.1f}"
        if isinstance(value, float):
            return f"{value:.4g}"
        if key == "error":
            value = str(value)
            return value if len(value) <= 60 else value[:57] + "..."
        return str(value)

    header = [title for title, _ in columns]
    body = []
    for row in rows:
        cells = [text(key, row[key]) for _, key in columns]
        cells[0] = ("* " if row["best"] == 1 else "  ") + cells[0]
        body.append(cells)
    header[0] = "  " + header[0]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)

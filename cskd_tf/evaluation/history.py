"""Per-epoch training logs of a run, from history.csv or the TensorBoard events.

Both sources give the same thing: ``{name: float64 array}`` with an
``"epoch"`` entry (0-based, as Keras counts) and one entry per logged value
(``loss``, ``accuracy``, ``val_accuracy``, ``val_ece``, ...), NaN where an
epoch did not log that value (e.g. validation every few epochs).
"""

from __future__ import annotations

import csv
import glob
import math
import os

import numpy as np

from cskd_tf.errors import WorkdirError

SOURCES = ("auto", "csv", "tensorboard")


def _to_float(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan  # blank or non-numeric cells, e.g. an epoch without validation
    return value


def _columns(rows_by_epoch: dict) -> dict:
    epochs = sorted(rows_by_epoch)
    names = sorted({k for row in rows_by_epoch.values() for k in row})
    out = {"epoch": np.asarray(epochs, dtype=np.float64)}
    for name in names:
        out[name] = np.asarray([rows_by_epoch[e].get(name, math.nan) for e in epochs],
                               dtype=np.float64)
    return out


def read_history_csv(path: str) -> dict:
    """Columns of a Keras CSVLogger file.

    A resumed run appends to the same file, and an epoch that was run again
    after an interruption appears twice; the later row wins, as it is the one
    the final weights continue from.
    """
    if not os.path.exists(path):
        raise WorkdirError(f"{path} does not exist; the run has not finished an epoch yet")
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("epoch") in (None, ""):
                continue
            epoch = int(_to_float(row["epoch"]))
            rows[epoch] = {k: _to_float(v) for k, v in row.items() if k and k != "epoch"}
    if not rows:
        raise WorkdirError(f"{path} holds no epochs yet")
    return _columns(rows)


def read_tensorboard(logdir: str) -> dict:
    """Epoch scalars written by keras.callbacks.TensorBoard under ``logdir``.

    Keras writes ``epoch_<name>`` into ``train/`` and ``validation/``; the
    validation ones become ``val_<name>`` here, matching history.csv.
    """
    # Imported here: the event reader pulls in TensorFlow, which the CSV path
    # does not need.
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    rows = {}
    found = False
    for sub, prefix in (("train", ""), ("validation", "val_")):
        folder = os.path.join(logdir, sub)
        if not glob.glob(os.path.join(folder, "events.out.tfevents.*")):
            continue
        found = True
        # 0 = keep every event; the default would subsample long runs.
        acc = ea.EventAccumulator(folder, size_guidance={ea.TENSORS: 0, ea.SCALARS: 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("tensors", []):
            if tag.startswith("epoch_"):
                for event in acc.Tensors(tag):
                    value = float(np.asarray(tensor_util.make_ndarray(event.tensor_proto)))
                    rows.setdefault(int(event.step), {})[prefix + tag[6:]] = value
        for tag in tags.get("scalars", []):  # summaries written by TF1-style code
            if tag.startswith("epoch_"):
                for event in acc.Scalars(tag):
                    rows.setdefault(int(event.step), {})[prefix + tag[6:]] = float(event.value)
    if not found:
        raise WorkdirError(f"{logdir} holds no TensorBoard event files (train/ or validation/)")
    if not rows:
        raise WorkdirError(f"{logdir} holds no epoch_* scalars yet")
    return _columns(rows)


def load_history(workdir: str, source: str = "auto") -> dict:
    """The run's per-epoch logs; ``auto`` prefers history.csv, else TensorBoard."""
    if source not in SOURCES:
        raise WorkdirError(f"unknown history source {source!r}; use one of {', '.join(SOURCES)}")
    csv_path = os.path.join(workdir, "history.csv")
    if source == "csv" or (source == "auto" and os.path.exists(csv_path)):
        return read_history_csv(csv_path)
    return read_tensorboard(os.path.join(workdir, "tensorboard"))


def best_epoch_metrics(history: dict, prefix: str = "test", where: str = "history") -> dict:
    """metrics.json-style numbers of the epoch with the highest ``{prefix}_accuracy``.

    This is the number the reference code (alinlab/cs-kd train.py) prints: the best test
    accuracy over all epochs, i.e. a model chosen on the test split itself — optimistic,
    and reported as such. A tie keeps the earliest epoch (the reference updates its best
    only on a strictly higher accuracy). Errors and ECE are converted back to percent;
    ``epoch`` is the chosen epoch, 1-based. Raises WorkdirError without that column (it is
    logged only under ``config.protocol = "paper"``).
    """
    accuracy = history.get(f"{prefix}_accuracy")
    if accuracy is None or not np.isfinite(accuracy).any():
        raise WorkdirError(f"{where} has no per-epoch {prefix}_accuracy; it is logged only by "
                           "runs trained with config.protocol='paper'; report this run with "
                           "--selection=final")
    best = int(np.nanargmax(accuracy))

    def at(name, scale=1.0, offset=None):
        column = history.get(f"{prefix}_{name}")
        if column is None or not np.isfinite(column[best]):
            return None
        value = float(column[best])
        return scale * (value if offset is None else offset - value)

    return {"top1_error": at("accuracy", 100.0, 1.0),
            "top5_error": at("top5_accuracy", 100.0, 1.0),
            "ece": at("ece", 100.0),
            "nll": at("nll"),
            "recall_at_1": at("recall_at_1", 100.0),
            "epoch": int(history["epoch"][best]) + 1}

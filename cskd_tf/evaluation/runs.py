"""Choosing which metrics of a :class:`cskd_tf.runs.Run` a report shows.

Reading run folders is :mod:`cskd_tf.runs`; this adds the evaluation-side choice of
``cskd-report --selection=best_test_epoch`` (history.csv's best test epoch instead of the
final metrics).
"""

from __future__ import annotations

import dataclasses
import os

from cskd_tf.errors import ConfigError, WorkdirError
from cskd_tf.evaluation.history import best_epoch_metrics, read_history_csv
from cskd_tf.runs import Run


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

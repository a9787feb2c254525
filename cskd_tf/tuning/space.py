"""The search space and the objectives of cskd-tune, read from ``config.search``.

Each dataset's config declares what to search (``configs/*.py`` may narrow
it, ``--config.search.FIELD=...`` too):

    config.search.lambda_cls    = (min, max)      λ, log-uniform
    config.search.temperature   = (T1, T2, ...)   T, one of the choices
    config.search.learning_rate = () | (min, max) log-uniform when given
    config.search.weight_decay  = () | (min, max) log-uniform when given

``()`` keeps the plain config field (``config.lambda_cls`` etc.) fixed.

This module imports neither TensorFlow nor Keras Tuner, so the command line
can reject a bad space or objective in a second, before the slow imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cskd_tf import config as config_lib
from cskd_tf.errors import ConfigError

# Objective name -> direction. Every value is computed on the held-out validation split
# by fit's own validation pass (the compiled metrics); the test split is never looked at.
OBJECTIVES = {
    "val_accuracy": "max",
    "val_top5_accuracy": "max",
    "val_ece": "min",
    "val_nll": "min",
    "val_recall_at_1": "max",
    # Top-1 error plus ECE, both as fractions: accuracy and calibration at equal weight.
    "val_error_plus_ece": "min",
}


def objective_direction(name: str) -> str:
    """'min' or 'max' for an objective name; ConfigError naming the choices otherwise."""
    if name not in OBJECTIVES:
        choices = ", ".join(f"{k} ({v})" for k, v in OBJECTIVES.items())
        raise ConfigError(f"unknown --objective {name!r}; choose one of: {choices}")
    return OBJECTIVES[name]


def add_derived_metrics(logs: dict) -> dict:
    """Adds the combined objectives to epoch logs that hold the validation metrics."""
    if "val_accuracy" in logs and "val_ece" in logs:
        logs["val_error_plus_ece"] = (1.0 - float(logs["val_accuracy"])) + float(logs["val_ece"])
    return logs


@dataclass(frozen=True)
class Dimension:
    """One searched config field: a log-uniform range or a list of choices."""

    name: str
    kind: str  # "log_uniform" | "choice" | "fixed"
    values: tuple  # (min, max), the choices, or (value,)

    def declare(self, hp):
        """Registers this dimension with a keras_tuner.HyperParameters; returns its value."""
        if self.kind == "log_uniform":
            return hp.Float(self.name, float(self.values[0]), float(self.values[1]),
                            sampling="log")
        if self.kind == "choice":
            return hp.Choice(self.name, [float(v) for v in self.values])
        return hp.Fixed(self.name, float(self.values[0]))

    def describe(self) -> str:
        if self.kind == "log_uniform":
            return f"log-uniform in [{_num(self.values[0])}, {_num(self.values[1])}]"
        if self.kind == "choice":
            return "one of " + ", ".join(_num(v) for v in self.values)
        return f"fixed at {_num(self.values[0])} (config.search.{self.name} allows one value)"


def _num(value) -> str:
    return f"{float(value):.6g}"


class SearchSpace:
    """The searched dimensions of a config, and how a trial's values become a config."""

    def __init__(self, config):
        config_lib.check_search(config.search)
        self.config = config
        self.dimensions = []
        for name in config_lib.SEARCH_RANGES + config_lib.SEARCH_CHOICES:
            value = tuple(config.search[name])
            if not value:
                continue
            if name in config_lib.SEARCH_CHOICES:
                kind = "choice" if len(value) > 1 else "fixed"
            else:
                kind = "log_uniform" if value[0] < value[1] else "fixed"
                value = value if kind == "log_uniform" else value[:1]
            self.dimensions.append(Dimension(name, kind, value))
        # Keep the printed and tabulated order stable: λ, T, then the optimiser fields.
        order = ("lambda_cls", "temperature", "learning_rate", "weight_decay")
        self.dimensions.sort(key=lambda d: order.index(d.name))
        if not any(d.kind != "fixed" for d in self.dimensions):
            raise ConfigError(
                "config.search defines nothing to tune (every entry is () or a single value); "
                "set e.g. --config.search.lambda_cls='(0.25, 8.0)' or "
                "--config.search.temperature='(1, 2, 4, 8)'")

    @property
    def names(self):
        return [d.name for d in self.dimensions]

    def declare(self, hp):
        """Declares every dimension on ``hp``; returns {name: value} for this trial."""
        return {d.name: d.declare(hp) for d in self.dimensions}

    def trial_config(self, values: dict):
        """A copy of the config with a trial's values (other keys, e.g. tuner/*, ignored)."""
        config = config_lib.from_json(config_lib.to_json(self.config))
        for name in self.names:
            if name in values:
                config[name] = float(values[name])
        return config_lib.validate(config)

    def best_overrides(self, values: dict) -> dict:
        """The config fields of a trial, as cskd-train's --config_overrides reads them."""
        return {name: float(values[name]) for name in self.names if name in values}

    def describe(self) -> list:
        """Lines for the terminal: every tunable field, searched or fixed."""
        searched = {d.name: d for d in self.dimensions}
        lines = []
        for name in ("lambda_cls", "temperature", "learning_rate", "weight_decay"):
            text = (searched[name].describe() if name in searched
                    else f"fixed at config.{name}={_num(self.config[name])}")
            lines.append(f"  {name:<14} {text}")
        return lines

    def size_hint(self) -> float:
        """Number of distinct points (inf when a continuous range is searched)."""
        size = 1.0
        for d in self.dimensions:
            size *= math.inf if d.kind == "log_uniform" else len(d.values)
        return size

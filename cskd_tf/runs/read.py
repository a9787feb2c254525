"""Reading and checking run folders: :func:`find_run_dirs`, and :func:`load_run` -> :class:`Run`.

Only JSON is read here, no TensorFlow: a :class:`Run` is what reports group and what
:mod:`cskd_tf.training.restore` rebuilds a model from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from cskd_tf import config as config_lib
from cskd_tf.errors import WorkdirError
from cskd_tf.runs.files import read_json, recorded_precision
from cskd_tf.runs.folder import Workdir


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


# Config fields that make a run's data a subset of its dataset (the budgeted
# protocols): runs on different subsets are different experiments.
SUBSET_FIELDS = ("max_classes", "max_train_per_class")


def dataset_label(config: dict) -> str:
    """``config.dataset``, plus the subset fields that are set, e.g.
    ``tinyimagenet (max_train_per_class=10)``."""
    subset = [f"{k}={config[k]}" for k in SUBSET_FIELDS if config.get(k)]
    return str(config["dataset"]) + (f" ({', '.join(subset)})" if subset else "")


def model_label(config: dict, precision: str) -> str:
    """``config.model``, plus the precision unless float32, e.g. ``preact_resnet18
    (mixed_bfloat16)``: runs of different precision are different experiments, never
    averaged together (a run with ``auto`` that has not started training: ``(auto)``)."""
    model = str(config["model"])
    return model if precision == "float32" else f"{model} ({precision})"


@dataclass
class Run:
    """One run folder: the fields that group it, and its metrics if finished."""

    path: str
    dataset: str
    model: str  # model_label: the architecture, with the precision unless float32
    method: str
    seed: int
    config: dict  # config.json with every default filled in, as plain JSON values
    metrics: dict | None  # None: metrics.json not written yet, i.e. unfinished
    # The Keras policy it trained under (recorded_precision); "auto": not started yet.
    precision: str = "float32"
    # DIR/model.keras when load_run was given that file: the model to load instead of
    # rebuilding it from the newest checkpoint.
    keras_file: str | None = None

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    @property
    def folder(self) -> Workdir:
        return Workdir(self.path)

    def load_config(self):
        """config.json as the ml_collections.ConfigDict the run was trained with."""
        return self.folder.load_config()

    def facts(self) -> dict:
        """data.json: the dataset facts (WorkdirError if missing or not JSON)."""
        return self.folder.read("data.json")


def is_standalone_keras_file(path) -> bool:
    """Whether ``path`` is an existing ``.keras`` file outside a cskd-train run folder.

    Such a file (e.g. ``model.save`` after training from Python) carries what serving and
    evaluation need in the model itself (``CSKDModel(class_names=..., pixel_max=...)``);
    a file inside a run folder is read with the run's config and data facts instead.
    """
    path = str(path)
    return (path.endswith(".keras") and os.path.isfile(path)
            and not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(path)),
                                                "data.json")))


def load_run(path, need_finished=False) -> Run:
    """The run in folder ``path``, or the run a ``DIR/model.keras`` file was saved in.

    ``metrics`` is None until metrics.json exists (unfinished); with ``need_finished`` an
    unfinished run is a WorkdirError. The config is read as resuming reads it
    (``config.from_json``: a run written before a field existed gets that field's default),
    so runs from older versions compare equal to new ones with the same settings.
    """
    keras_file = str(path).endswith(".keras")
    folder = os.path.abspath(os.path.dirname(os.path.abspath(path)) if keras_file else path)
    if keras_file and not os.path.isfile(path):
        raise WorkdirError(f"{path} does not exist; pass a .keras file saved by model.save or "
                           "cskd-train (DIR/model.keras), or a cskd-train workdir")
    if keras_file and not os.path.exists(os.path.join(folder, "data.json")):
        raise WorkdirError(f"{path} is not inside a cskd-train workdir (no data.json beside "
                           "it); keep it in its run folder")
    metrics_path = os.path.join(folder, "metrics.json")
    if need_finished and not os.path.exists(metrics_path):
        raise WorkdirError(f"{folder} holds no finished model (no metrics.json); train it to "
                           "the end with cskd-train --workdir=DIR first")
    config = _read_config(folder)
    metrics = read_json(metrics_path) if os.path.exists(metrics_path) else None
    if metrics is not None and not (isinstance(metrics, dict)
                                    and all(isinstance(v, dict) for v in metrics.values())):
        raise WorkdirError(f"{metrics_path} is not a {{split: {{metric: value}}}} object")
    precision = recorded_precision(folder, config["mixed_precision"]) or "auto"
    return Run(path=folder, dataset=dataset_label(config), model=model_label(config, precision),
               method=str(config["method"]), seed=int(config.get("seed", 0)), config=config,
               metrics=metrics, precision=precision,
               keras_file=os.path.abspath(path) if keras_file else None)


def _read_config(folder) -> dict:
    """config.json with every default filled in, as plain JSON values."""
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise WorkdirError(f"{folder} holds no training run (no config.json); "
                           "train one with cskd-train --workdir=DIR first")
    config = read_json(path)
    if not isinstance(config, dict):
        raise WorkdirError(f"{path} is not a valid config (not a JSON object); restore it "
                           "from a copy or start the run over with --overwrite")
    missing = [k for k in ("dataset", "model", "method") if k not in config]
    if missing:
        raise WorkdirError(f"{path} lacks {', '.join(missing)}; was it written by cskd-train?")
    try:
        # from_json fills defaults at every depth (a field added to a method group too).
        return json.loads(config_lib.to_json(config_lib.from_json(json.dumps(config))))
    except (ValueError, TypeError) as error:
        raise WorkdirError(f"{path} is not a valid config ({error}); restore it from a copy "
                           "or start the run over with --overwrite") from None

"""The files of one training run and the rules that protect them.

    DIR/config.json     the full config the run was started with
    DIR/data.json       dataset facts the model needs later (classes, shape, mean/std)
    DIR/checkpoints/    model + optimizer + completed epochs, one per epoch (last 2 kept)
    DIR/history.csv     one row of logs per epoch (appended across resumes)
    DIR/tensorboard/    TensorBoard event files
    DIR/metrics.json    final metrics per split; written last, so it marks a finished run

Every JSON file is written to a temporary name and renamed, so an interrupted
run never leaves a truncated file behind.
"""

from __future__ import annotations

import json
import os
import shutil

from cskd_tf import config as config_lib
from cskd_tf.errors import WorkdirError

# Fields that may differ between an interrupted run and its resumption.
RESUME_FREE_FIELDS = ("verbose",)


def write_json_atomic(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        if isinstance(payload, str):
            f.write(payload)
        else:
            json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


class Workdir:
    def __init__(self, path):
        self.path = os.path.abspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def checkpoint_dir(self):
        return self.file("checkpoints")

    def is_finished(self):
        return os.path.exists(self.file("metrics.json"))

    def has_run(self):
        return os.path.exists(self.file("config.json"))

    def refuse_if_finished(self, overwrite=False):
        if self.is_finished() and not overwrite:
            raise WorkdirError(f"{self.path} already holds a finished run; pass --overwrite to "
                               "replace it or choose another --workdir")

    def prepare_for_training(self, config, overwrite=False):
        """Creates the workdir, or checks that a run in it may be resumed."""
        self.refuse_if_finished(overwrite)
        if overwrite and os.path.isdir(self.path):
            shutil.rmtree(self.path)
        if self.has_run():
            previous = self.load_config()
            changed = [k for k in config.keys()
                       if k not in RESUME_FREE_FIELDS and _plain(previous.get(k)) != _plain(config.get(k))]
            if changed:
                raise WorkdirError(
                    f"{self.path} holds an unfinished run with a different config "
                    f"(fields: {', '.join(sorted(changed))}); rerun with the same config to resume, "
                    "or pass --overwrite to start over")
        os.makedirs(self.path, exist_ok=True)
        write_json_atomic(self.file("config.json"), config_lib.to_json(config))

    def load_config(self):
        if not self.has_run():
            raise WorkdirError(f"{self.path} holds no training run (no config.json); "
                               "train one with cskd-train --workdir=DIR first")
        with open(self.file("config.json")) as f:
            return config_lib.from_json(f.read())

    def write(self, name, payload):
        write_json_atomic(self.file(name), payload)

    def read(self, name):
        path = self.file(name)
        if not os.path.exists(path):
            raise WorkdirError(f"{path} is missing; the run in {self.path} is incomplete — "
                               "rerun cskd-train with the same --workdir to finish it")
        with open(path) as f:
            return json.load(f)


def _plain(value):
    """Compares configs by value, whatever container types JSON gave back."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return json.loads(json.dumps(value, sort_keys=True, default=list))

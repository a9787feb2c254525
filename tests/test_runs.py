"""cskd_tf.runs: the run folder read back, written by the current version and by 0.1.0.

tests/data/run_written_by_0_1/ holds the JSON files and history.csv that cskd-train wrote
before cskd_tf.runs existed (digits, 5 classes, 2 epochs; checkpoints and model.keras left
out for size), so a change to the format that breaks old run folders fails here.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from cskd_tf import config as config_lib
from cskd_tf import runs
from cskd_tf.errors import WorkdirError

OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "run_written_by_0_1")


@pytest.fixture
def old_run(tmp_path):
    path = tmp_path / "old"
    shutil.copytree(OLD_RUN, path)
    return str(path)


def test_a_run_folder_of_0_1_loads(old_run):
    run = runs.load_run(old_run, need_finished=True)
    assert isinstance(run, runs.Run) and run.finished
    assert run.path == os.path.abspath(old_run) and run.keras_file is None
    assert run.dataset == "digits (max_classes=5, max_train_per_class=8)"
    assert (run.model, run.method, run.seed, run.precision) == ("preact_resnet18", "cskd", 0,
                                                                "float32")
    assert run.metrics["test"]["top1_error"] == pytest.approx(80.0)
    assert run.facts()["num_classes"] == 5
    assert run.facts()["runtime"]["distribution"]["kind"] == "one_device"
    config = run.load_config()
    assert config.model == "preact_resnet18" and config.max_classes == 5
    # The plain config is the ConfigDict's JSON with every default filled in.
    assert run.config == json.loads(config_lib.to_json(config))
    assert runs.find_run_dirs([os.path.dirname(old_run)]) == [run.path]


def test_an_unfinished_run_and_its_model_keras(old_run):
    os.remove(os.path.join(old_run, "metrics.json"))
    run = runs.load_run(old_run)
    assert not run.finished and run.metrics is None
    with pytest.raises(WorkdirError, match="holds no finished model"):
        runs.load_run(old_run, need_finished=True)
    keras_file = os.path.join(old_run, "model.keras")
    with pytest.raises(WorkdirError, match="model.keras does not exist"):
        runs.load_run(keras_file)
    with open(keras_file, "wb") as f:
        f.write(b"only checked for existence here")
    assert runs.load_run(keras_file).keras_file == os.path.abspath(keras_file)
    assert not runs.is_standalone_keras_file(keras_file)


def test_damaged_files_are_one_line_errors(old_run, tmp_path):
    with pytest.raises(WorkdirError, match="holds no training run"):
        runs.load_run(str(tmp_path))
    with open(os.path.join(old_run, "metrics.json"), "w") as f:
        json.dump({"test": 3}, f)
    with pytest.raises(WorkdirError, match=r"is not a \{split: \{metric: value\}\} object"):
        runs.load_run(old_run)
    with open(os.path.join(old_run, "config.json"), "w") as f:
        json.dump({"dataset": "digits"}, f)
    with pytest.raises(WorkdirError, match="config.json lacks model, method"):
        runs.load_run(old_run)
    with open(os.path.join(old_run, "config.json"), "w") as f:
        f.write("[1, 2]")
    with pytest.raises(WorkdirError, match="config.json is not a valid config"):
        runs.load_run(old_run)


def test_resuming_an_0_1_run_with_its_config_is_allowed(old_run):
    os.remove(os.path.join(old_run, "metrics.json"))
    folder = runs.Workdir(old_run)
    config = folder.load_config()
    try:
        folder.prepare_for_training(config, precision="float32")
        with pytest.raises(WorkdirError, match="trained under float32"):
            folder.prepare_for_training(config, precision="mixed_bfloat16")
        changed = config.copy_and_resolve_references()
        changed.num_epochs = int(config.num_epochs) + 1
        with pytest.raises(WorkdirError, match=r"different config \(fields: num_epochs\)"):
            folder.prepare_for_training(changed, precision="float32")
    finally:
        folder.unlock()

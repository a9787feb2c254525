"""Resuming from the newest readable checkpoint, and one-line errors for damaged run files."""

import csv
import json
import os
import shutil

import keras
import pytest

from conftest import make_tiny_config

DATA = "ckpt-{}.data-00000-of-00001"
INDEX = "ckpt-{}.index"


def _damage(path, how):
    with open(path, "rb") as f:
        content = f.read()
    if how == "garbage":  # what a full disk or a cut copy leaves: a short file of junk
        content = b"garbage\n" * 8
    else:  # bytes overwritten in place, same length
        middle = len(content) // 2
        content = content[:middle] + bytes(64) + content[middle + 64:]
    with open(path, "wb") as f:
        f.write(content)


def _history(run):
    with open(os.path.join(run, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(config, workdir, metrics) of a 3-epoch deterministic tiny run (checkpoints 2 and 3),
    trained once for the module; tests work on copies."""
    from cskd_tf.training.trainer import train

    config = make_tiny_config()
    config.num_epochs = 3
    config.deterministic = True
    workdir = str(tmp_path_factory.mktemp("resume") / "reference")
    return config, workdir, train(config, workdir)


def _unfinished_copy(reference, dest):
    """The run as an interruption after its last checkpoint leaves it (no final files)."""
    shutil.copytree(reference, dest, ignore=shutil.ignore_patterns(
        "metrics.json", "model.keras", "train.lock"))
    return dest


class EpochsTrained(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.parametrize("damaged, how, resumed_after", [
    ({3: DATA}, "garbage", 2),
    ({3: DATA}, "overwritten", 2),
    ({3: INDEX}, "garbage", 2),
    ({3: DATA, 2: INDEX}, "garbage", 0),
])
@pytest.mark.slow
def test_an_unreadable_checkpoint_is_reported_and_the_newest_readable_one_resumed(
        tmp_path, finished_run, capsys, damaged, how, resumed_after):
    from cskd_tf.training.trainer import train

    config, reference, want = finished_run
    config = config.copy_and_resolve_references()
    run = _unfinished_copy(reference, str(tmp_path / "run"))
    checkpoints = os.path.join(run, "checkpoints")
    for epoch, name in damaged.items():
        _damage(os.path.join(checkpoints, name.format(epoch)), how)
    capsys.readouterr()

    trained = EpochsTrained()
    got = train(config, run, extra_callbacks=[trained])

    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: checkpoint")]
    assert len(warnings) == len(damaged), warnings
    then = (f"resuming after epoch {resumed_after} (ckpt-{resumed_after})" if resumed_after
            else "no readable checkpoint is left, so training starts over from epoch 0")
    for line, (epoch, name) in zip(warnings, sorted(damaged.items(), reverse=True)):
        assert line.startswith(f"warning: checkpoint {checkpoints}/ckpt-{epoch} is unreadable "
                               f"({name.format(epoch)}: "), line
        assert line.endswith(f"its files are renamed to ckpt-{epoch}.*.corrupt; {then}"), line
    # The damaged checkpoints are kept aside, not deleted, and never read again.
    for epoch in damaged:
        for name in (DATA, INDEX):
            assert os.path.exists(os.path.join(checkpoints, name.format(epoch) + ".corrupt"))
    assert trained.epochs == list(range(resumed_after, config.num_epochs))
    # The epochs after the restored one were trained again and logged once each, exactly
    # as the uninterrupted run logged them.
    rows, reference_rows = _history(run), _history(reference)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    for row, expected in zip(rows, reference_rows):
        for key in ("loss", "accuracy", "lr", "val_accuracy"):
            assert float(row[key]) == pytest.approx(float(expected[key]), rel=1e-4), key
    for split in want:
        for key in ("top1_error", "nll", "ece"):
            assert got[split][key] == pytest.approx(want[split][key], rel=1e-4, abs=1e-4)
    # The state file names the new checkpoints; the next resume needs no warning.
    assert open(os.path.join(checkpoints, "checkpoint")).readline().strip() == \
        'model_checkpoint_path: "ckpt-3"'


def test_history_is_cut_back_to_the_epoch_resumed_after(tmp_path):
    from cskd_tf.runs.checkpoints import cut_history

    path = tmp_path / "history.csv"
    header = "epoch,accuracy,loss\r\n"
    path.write_text(header + "0,0.1,2.0\r\n1,0.2,1.5\r\n1,0.25,1.4\r\n2,0.3,1.0\r\n3,0.4",
                    newline="")
    assert cut_history(str(path), 2) == 3  # epoch 2, the older row of epoch 1, the cut row
    with open(path, newline="") as f:
        assert f.read() == header + "0,0.1,2.0\r\n1,0.25,1.4\r\n"
    assert cut_history(str(path), 2) == 0
    assert cut_history(str(path), 0) == 2
    assert path.read_text() == ""


def test_damaged_run_files_are_one_line_errors_for_evaluation(tmp_path, finished_run):
    from cskd_tf.errors import WorkdirError
    from cskd_tf.training.restore import restore_from_workdir

    _, reference, _ = finished_run
    run = str(tmp_path / "run")
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns("train.lock"))

    _damage(os.path.join(run, "checkpoints", DATA.format(3)), "garbage")
    with pytest.raises(WorkdirError, match=r"checkpoints/ckpt-3 is unreadable \(ckpt-3\.data-"
                                           r".*model\.keras holds the same trained model"):
        restore_from_workdir(run)
    # The finished model is still there in model.keras.
    assert restore_from_workdir(os.path.join(run, "model.keras"))[2] is not None

    _damage(os.path.join(run, "model.keras"), "garbage")
    with pytest.raises(WorkdirError, match="model.keras is not a .keras file"):
        restore_from_workdir(os.path.join(run, "model.keras"))

    with open(os.path.join(run, "data.json"), "w") as f:
        f.write('{"num_classes": 1')
    with pytest.raises(WorkdirError, match="data.json is not valid JSON"):
        restore_from_workdir(run)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(["not", "a", "config"], f)
    with pytest.raises(WorkdirError, match="config.json is not a valid config"):
        restore_from_workdir(run)

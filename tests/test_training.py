"""The training application end to end: CLI, resume, callbacks, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import console_script, one_line_error

TINY = ["--config.model_width=8", "--config.max_train_per_class=40", "--config.batch_size=32",
        "--config.learning_rate=0.1", "--config.lr_decay_epochs=(2,)", "--config.verbose=0"]
CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "digits_quick.py")
README = os.path.join(os.path.dirname(__file__), "..", "README.md")
PAPER_METRICS = {"top1_error", "top5_error", "ece", "recall_at_1", "nll"}


def cli(name, *args, timeout=300):
    return subprocess.run([console_script(name), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.cli
def test_cli_trains_evaluates_and_protects_a_finished_run(tmp_path):
    workdir = str(tmp_path / "run")
    result = cli("cskd-train", f"--config={CONFIG}", f"--workdir={workdir}",
                 "--config.num_epochs=3", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert set(metrics) == {"val", "test"}
    for split in metrics.values():
        assert PAPER_METRICS <= set(split)
        assert 0 <= split["top1_error"] <= 100 and 0 <= split["ece"] <= 100
        assert split["top5_error"] <= split["top1_error"]
    # Three short epochs on digits already beat chance (90% error) clearly.
    assert metrics["val"]["top1_error"] < 75

    rows = list(csv.DictReader(open(os.path.join(workdir, "history.csv"))))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    # The columns of before fit's own validation pass replaced the validation callback,
    # plus val_ce (the supervised term, logged by the model as in training).
    assert set(rows[0]) == {"epoch", "loss", "ce", "cls", "accuracy", "top5_accuracy", "lr",
                            "lambda_cls", "temperature", "val_loss", "val_ce", "val_accuracy",
                            "val_top5_accuracy", "val_ece", "val_nll", "val_recall_at_1"}
    # protocol=tune (the default): the test split is not looked at during training.
    assert not any(column.startswith("test_") for column in rows[0])
    # Temperature scaling: one T, fitted on val, applied to both splits; cskd-eval agrees.
    temperature = metrics["val"]["temperature_ts"]
    assert temperature > 0 and metrics["test"]["temperature_ts"] == temperature
    for split in metrics.values():
        assert 0 <= split["ece_ts"] <= 100 and split["nll_ts"] > 0
        # T minimises the val NLL, so it cannot make the val NLL worse than T = 1.
    assert metrics["val"]["nll_ts"] <= metrics["val"]["nll"] + 1e-9
    # lr ÷10 at epoch 2 (0-based) as configured.
    assert float(rows[1]["lr"]) == pytest.approx(0.1)
    assert float(rows[2]["lr"]) == pytest.approx(0.01)
    assert os.listdir(os.path.join(workdir, "tensorboard"))

    evaluated = json.loads(cli("cskd-eval", f"--workdir={workdir}").stdout)
    for split in ("val", "test"):
        for key in PAPER_METRICS | {"ece_ts", "nll_ts", "temperature_ts"}:
            assert evaluated[split][key] == pytest.approx(metrics[split][key], abs=1e-3)

    before = os.path.getmtime(os.path.join(workdir, "metrics.json"))
    again = cli("cskd-train", f"--config={CONFIG}", f"--workdir={workdir}",
                "--config.num_epochs=3", *TINY)
    assert "already holds a finished run" in one_line_error(again)
    assert os.path.getmtime(os.path.join(workdir, "metrics.json")) == before


def _train_cmd(workdir, epochs):
    return [console_script("cskd-train"), f"--config={CONFIG}", f"--workdir={workdir}",
            f"--config.num_epochs={epochs}", "--config.deterministic=True",
            "--config.lr_decay_epochs=(3,)", *[a for a in TINY if "lr_decay" not in a]]


@pytest.mark.slow
@pytest.mark.cli
def test_kill_minus_nine_then_rerun_finishes_like_an_uninterrupted_run(tmp_path):
    epochs = 5
    reference = str(tmp_path / "reference")
    assert subprocess.run(_train_cmd(reference, epochs), capture_output=True,
                          timeout=300).returncode == 0

    workdir = str(tmp_path / "interrupted")
    process = subprocess.Popen(_train_cmd(workdir, epochs), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    index = os.path.join(workdir, "checkpoints", "checkpoint")
    deadline = time.time() + 240
    while not os.path.exists(index) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert os.path.exists(index), "no checkpoint was written before the kill"
    assert not os.path.exists(os.path.join(workdir, "metrics.json")), "the run finished too soon"

    resumed = subprocess.run(_train_cmd(workdir, epochs), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = json.load(open(os.path.join(reference, "metrics.json")))
    got = json.load(open(os.path.join(workdir, "metrics.json")))
    for split in want:
        for key in PAPER_METRICS:
            assert got[split][key] == pytest.approx(want[split][key], rel=1e-4, abs=1e-4), key
    rows = list(csv.DictReader(open(os.path.join(workdir, "history.csv"))))
    assert {int(r["epoch"]) for r in rows} == set(range(epochs))


@pytest.mark.parametrize("override, expected", [
    ("--config.foo=1", "unknown config field 'foo'"),
    ("--config.dataset=imagenet9", "unknown dataset 'imagenet9'"),
    ("--config.model=resnet7", "unknown model 'resnet7'"),
    ("--config.method=csdk", "unknown method 'csdk'"),
    ("--config.data_dir=/nonexistent/tiny", "does not exist"),
    (f"--config.data_dir={README}", "README.md is a file, not a directory"),
    ("--config.batch_size=0", "batch_size must be > 0"),
    ("--config.lr_decay_epochs=abc", "must be a tuple of whole epochs >= 0"),
    ("--config.eval_splits=('tset',)", "config.eval_splits=('tset',) must be a tuple of split"),
    ("stray_argument", "unexpected arguments: stray_argument; write flags as --NAME=VALUE"),
    ("--config.momentum=2.0", "config.momentum must be in [0, 1) (got 2.0)"),
    ("--config.weight_decay=-1e-4", "config.weight_decay must be >= 0 (got -0.0001)"),
    ("--config.lambda_warmup_epochs=-1", "config.lambda_warmup_epochs must be >= 0 (got -1)"),
    ("--config.lr_decay_factor=-0.1", "config.lr_decay_factor must be > 0 (got -0.1)"),
    ("--config.steps_per_execution=0", "config.steps_per_execution must be >= 1 (got 0)"),
    ("--config.checkpoint_every_epochs=0", "config.checkpoint_every_epochs must be >= 1"),
])
@pytest.mark.cli
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, override, expected):
    workdir = tmp_path / "run"
    args = [f"--config={CONFIG}", f"--workdir={workdir}", *TINY, override]
    if "data_dir" in override:
        args.append("--config.dataset=tinyimagenet")
    line = one_line_error(cli("cskd-train", *args))
    assert expected in line
    assert not (workdir / "metrics.json").exists()


@pytest.mark.parametrize("extra", [[], ["--config.seed=3"]])
@pytest.mark.cli
def test_a_missing_config_file_is_one_line(tmp_path, extra):
    missing = os.path.join("configs", "no_such.py")
    line = one_line_error(cli("cskd-train", f"--config={missing}", f"--workdir={tmp_path}/run",
                              *extra))
    assert f"config file {missing} does not exist" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.cli
def test_a_config_path_that_is_a_directory_or_not_python_is_one_line(tmp_path):
    line = one_line_error(cli("cskd-train", f"--config={tmp_path}", f"--workdir={tmp_path}/r"))
    assert "cannot load the --config file" in line and "Is a directory" in line
    line = one_line_error(cli("cskd-train", f"--config={README}", f"--workdir={tmp_path}/r"))
    assert "README.md line" in line and "is not valid Python" in line


@pytest.mark.parametrize("body, expected", [
    ("x = 1\n", "has no get_config() function; define get_config()"),
    ("def get_config():\n    raise RuntimeError('boom')\n", "failed to load (RuntimeError: boom)"),
    ("import no_such_module_here\ndef get_config():\n    pass\n",
     "failed to load (ModuleNotFoundError: No module named 'no_such_module_here')"),
    # ml_collections pastes a traceback into a TypeError/ValueError raised in the file.
    ("from cskd_tf.config import default_config\ndef get_config():\n"
     "    c = default_config()\n    c.batch_size = '64'\n    return c\n",
     "failed to load (TypeError: Could not override field 'batch_size'"),
    ("def get_config():\n    return None\n", "get_config() returned None; end it with"),
])
@pytest.mark.cli
def test_a_config_file_that_fails_to_load_is_one_line(tmp_path, body, expected):
    path = tmp_path / "mine.py"
    path.write_text(body)
    line = one_line_error(cli("cskd-train", f"--config={path}", f"--workdir={tmp_path}/r"))
    assert f"config file {path}" in line and expected in line, line
    assert "\n" not in line and not (tmp_path / "r").exists()


@pytest.mark.parametrize("text, expected", [
    ("[1, 2]", "holds a JSON list, not an object of config fields"),
    ('{"batch_size": "abc"}', "batch_size='abc' does not fit config.batch_size"),
    ('{"kd": 3}', "kd=3 does not fit config.kd"),
])
@pytest.mark.cli
def test_a_config_overrides_file_of_the_wrong_shape_is_one_line(tmp_path, text, expected):
    overrides = tmp_path / "best.json"
    overrides.write_text(text)
    line = one_line_error(cli("cskd-train", f"--config={CONFIG}", f"--workdir={tmp_path}/r",
                              f"--config_overrides={overrides}"))
    assert expected in line, line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["file", "below_a_file"])
@pytest.mark.cli
def test_a_workdir_that_cannot_be_a_folder_is_one_line_and_the_file_is_kept(tmp_path, where):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    workdir = existing if where == "file" else existing / "run"
    line = one_line_error(cli("cskd-train", f"--config={CONFIG}", f"--workdir={workdir}", *TINY))
    assert f"cannot create the workdir {workdir}" in line and "choose another --workdir" in line
    assert existing.read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.cli
def test_lock_refuses_a_second_cskd_train_on_a_running_workdir(tmp_path):
    """One writer per workdir: the second run stops naming the first; after a kill -9 the
    lock file it left behind is stale and a new run proceeds."""
    import socket

    workdir = tmp_path / "run"
    lock = workdir / "train.lock"
    first = subprocess.Popen(_train_cmd(str(workdir), 1000), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None and not (
                lock.exists() and lock.read_text().strip()):
            time.sleep(0.1)
        holder = json.loads(lock.read_text())
        assert holder == {**holder, "pid": first.pid, "host": socket.gethostname()}
        second = subprocess.run(_train_cmd(str(workdir), 1000), capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2
        line = one_line_error(second)
        assert f"is in use by cskd-train pid {first.pid} on {socket.gethostname()}" in line
        assert first.poll() is None, "the first run must keep running"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # kill -9 runs no exit handler: the lock file stays, naming a dead process.
    assert json.loads(lock.read_text())["pid"] == first.pid
    again = cli("cskd-train", f"--config={CONFIG}", f"--workdir={workdir}", "--overwrite",
                "--config.num_epochs=1", *TINY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (workdir / "metrics.json").exists() and not lock.exists()


@pytest.mark.cli
def test_workdir_lock_names_the_holder_and_is_released(tmp_path):
    """In-process: a lock held by another live process is refused; a file naming a dead
    pid is taken over; unlock removes the file."""
    import socket

    from cskd_tf.errors import WorkdirError
    from cskd_tf.runs import folder as workdir_lib

    path = tmp_path / "run"
    path.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, socket, sys, time\n"
        f"fd = os.open({str(path / 'train.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname()}).encode())\n"
        "print('locked', flush=True)\ntime.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirError, match=f"in use by cskd-train pid {holder.pid} on "):
            workdir_lib.Workdir(str(path)).lock()
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead: its file stays but the lock is free.
    assert json.loads((path / "train.lock").read_text())["pid"] == holder.pid
    run = workdir_lib.Workdir(str(path))
    run.lock()
    run.lock()  # a second call in the same process (a resumed train()) is a no-op
    assert json.loads((path / "train.lock").read_text())["pid"] == os.getpid()
    run.unlock()
    assert not (path / "train.lock").exists()
    # Without flock, the recorded pid decides: dead or this process -> free, alive -> held.
    host = socket.gethostname()
    assert not workdir_lib._alive_elsewhere({"pid": holder.pid, "host": host})
    assert not workdir_lib._alive_elsewhere({"pid": os.getpid(), "host": host})
    assert workdir_lib._alive_elsewhere({"pid": os.getppid(), "host": host})
    assert workdir_lib._alive_elsewhere({"pid": 1, "host": host + "-elsewhere"})


@pytest.mark.cli
def test_eval_of_a_missing_run_is_one_line(tmp_path):
    assert "no training run" in one_line_error(cli("cskd-eval", f"--workdir={tmp_path}"))


def test_nan_loss_stops_with_epoch_and_step(tmp_path, tiny_config):
    from cskd_tf.errors import NonFiniteLossError
    from cskd_tf.training.trainer import train

    tiny_config.learning_rate = 1e30
    tiny_config.lr_decay_epochs = ()
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step \d+"):
        train(tiny_config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_paper_protocol_run_logs_test_metrics_per_epoch(tmp_path, tiny_config):
    from cskd_tf.evaluation.report import build_report
    from cskd_tf.training.trainer import train

    tiny_config.protocol = "paper"
    tiny_config.max_train_per_class = 0  # the whole training split
    tiny_config.steps_per_epoch = 8
    workdir = tmp_path / "run"
    metrics = train(tiny_config, str(workdir))
    # No val split: train is digits' whole train split, the final model is scored on test,
    # and there is nothing to fit a temperature on.
    facts = json.load(open(workdir / "data.json"))
    assert facts["splits"] == {"train": 1078, "test": 360}
    assert set(metrics) == {"test"} and "temperature_ts" not in metrics["test"]
    rows = list(csv.DictReader(open(workdir / "history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    test_columns = {"test_accuracy", "test_loss", "test_nll", "test_top5_accuracy", "test_ece"}
    assert test_columns <= set(rows[0])
    assert not any(column.startswith("val_") for column in rows[0])
    # The last row is the final model, which metrics.json scores on the same test split.
    last = rows[-1]
    assert float(last["test_accuracy"]) == pytest.approx(
        1 - metrics["test"]["top1_error"] / 100, abs=1e-6)
    assert float(last["test_nll"]) == pytest.approx(metrics["test"]["nll"], rel=1e-4)
    # --selection=best_test_epoch reports the best row, labelled as test-selected.
    best = max(float(r["test_accuracy"]) for r in rows)
    text = build_report([str(workdir)], selection="best_test_epoch")
    assert f"| {100 * (1 - best):.2f} |" in text and "[test-selected: best test epoch]" in text


def test_resuming_with_a_different_config_is_refused(tmp_path, tiny_config):
    from cskd_tf.errors import WorkdirError
    from cskd_tf.runs import Workdir

    Workdir(str(tmp_path)).prepare_for_training(tiny_config)
    tiny_config.lambda_cls = 3.0
    with pytest.raises(WorkdirError, match="lambda_cls"):
        Workdir(str(tmp_path)).prepare_for_training(tiny_config)


def digits_cskd_model():
    """(model, pair train set, val set, images): preact_resnet10 on 8×8 digits, compiled."""
    import keras
    from sklearn.datasets import load_digits

    from cskd_tf import losses, models
    from cskd_tf.config import default_config
    from cskd_tf.data import pair_dataset
    from cskd_tf.evaluation import ExpectedCalibrationError, NegativeLogLikelihood, RecallAtK

    digits = load_digits()
    images = (digits.images[..., None] * 16).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    train = pair_dataset(images[:320], labels[:320], batch_size=32, seed=0)
    val = pair_dataset(images[320:480], labels[320:480], batch_size=80, seed=1).map(
        lambda xs, y: (xs[0], y))

    config = default_config()
    method = losses.get_method("cskd", config)
    backbone = models.build("preact_resnet10", num_classes=10, input_shape=(8, 8, 1), width=8)
    model = models.CSKDModel(backbone, method=method, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  metrics=["accuracy", ExpectedCalibrationError(), NegativeLogLikelihood(),
                           RecallAtK(k=1)])
    return model, train, val, images


def test_model_fit_with_pair_dataset_and_cskd_callback():
    """The Python API: model.fit(pair_dataset, validation_data=..., callbacks=[CSKDCallback])."""
    from cskd_tf.training import CSKDCallback

    model, train, val, images = digits_cskd_model()
    callback = CSKDCallback(lambda_warmup_epochs=2)
    history = model.fit(train, epochs=2, validation_data=val, callbacks=[callback], verbose=0)
    logs = history.history
    assert logs["lambda_cls"] == pytest.approx([0.5, 1.0])
    assert logs["temperature"] == [4.0, 4.0]
    for key in ("loss", "ce", "cls", "accuracy", "val_ece", "val_nll", "val_recall_at_1",
                "val_accuracy"):
        assert len(logs[key]) == 2 and all(np.isfinite(logs[key])), key
    # The CS-KD term is really in the loss: loss = ce + λ·cls per batch, so on average too.
    assert logs["loss"][1] == pytest.approx(logs["ce"][1] + 1.0 * logs["cls"][1], rel=1e-3)
    # fit's own validation pass: val_loss is the validation cross-entropy (= NLL).
    assert logs["val_loss"][1] == pytest.approx(logs["val_nll"][1], rel=1e-4)
    assert model.predict(images[:4], verbose=0).shape == (4, 10)


def test_warmup_schedules_the_methods_lambda_across_fit_calls():
    """LambdaWarmup assigns the method's λ variable by epoch, also over resumed fits."""
    from cskd_tf.training import LambdaWarmup

    model, train, val, _ = digits_cskd_model()
    warmup = LambdaWarmup(lambda_warmup_epochs=4)  # target λ: the method's weight, 1.0
    for epoch in range(3):
        logs = model.fit(train, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=1,
                         verbose=0, callbacks=[warmup]).history
        assert logs["lambda_cls"] == pytest.approx([(epoch + 1) / 4])
    assert float(model.method.lambda_cls.numpy()) == pytest.approx(0.75)
    logs = model.fit(train, epochs=1, steps_per_epoch=1, verbose=0).history
    assert float(model.method.lambda_cls.numpy()) == pytest.approx(0.75)  # left alone
    assert "lambda_cls" not in logs


def test_step_schedule_divides_at_the_named_epochs():
    from cskd_tf.training.schedules import EpochSchedule

    schedule = EpochSchedule(0.1, steps_per_epoch=10, kind="step", decay_epochs=(2, 3))
    assert [round(float(schedule(s)), 6) for s in (0, 19, 20, 29, 30, 45)] == \
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def reference_epoch_lrs(base_lr, num_epochs):
    """A transcription of alinlab/cs-kd train.py: the lr each epoch trains with, when
    adjust_learning_rate(optimizer, epoch) runs after train(epoch) and val(epoch)."""
    lr, lrs = base_lr, []
    for epoch in range(num_epochs):
        lrs.append(lr)  # train(epoch)
        lr = base_lr  # adjust_learning_rate(optimizer, epoch)
        if epoch >= 0.5 * num_epochs:
            lr /= 10
        if epoch >= 0.75 * num_epochs:
            lr /= 10
    return lrs


def test_paper_schedule_is_the_reference_per_epoch_lr():
    import keras
    import tensorflow as tf

    from cskd_tf.recipes import PAPER_DATASETS, paper_config, reference_decay_epochs
    from cskd_tf.training.fit_setup import make_optimizer
    from cskd_tf.training.schedules import EpochSchedule

    steps = 3
    for key in PAPER_DATASETS:
        config = paper_config(key)
        if key == "imagenet":  # 90 epochs at the paper's (30, 60), not train.py's rule
            assert config.lr_decay_epochs == (30, 60)
            continue
        # Every step of all 200 epochs, through the optimizer the trainer builds.
        rate = make_optimizer(config, steps).get_config()["learning_rate"]
        schedule = keras.optimizers.schedules.deserialize(rate)
        got = schedule(tf.range(config.num_epochs * steps)).numpy().reshape(-1, steps)
        want = reference_epoch_lrs(0.1, 200)
        assert config.num_epochs == 200 and config.learning_rate == 0.1
        np.testing.assert_allclose(got, np.repeat(np.array(want)[:, None], steps, 1), rtol=1e-6)
    assert [want.count(lr) for lr in (0.1, 0.1 / 10, 0.1 / 100)] == [101, 50, 49]
    # reference_decay_epochs reproduces the rule for any run length.
    for epochs in range(1, 301):
        schedule = EpochSchedule(0.1, 1, decay_epochs=reference_decay_epochs(epochs))
        np.testing.assert_allclose(schedule(tf.range(epochs)).numpy(),
                                   reference_epoch_lrs(0.1, epochs), rtol=1e-6)


@pytest.mark.cli
def test_config_file_with_an_unknown_field_is_refused(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from cskd_tf.config import default_config\n"
                    "def get_config():\n    c = default_config()\n    c.lamda_cls = 2.0\n"
                    "    return c\n")
    line = one_line_error(cli("cskd-train", f"--config={path}", f"--workdir={tmp_path}/run"))
    assert "unknown config field 'lamda_cls'; did you mean 'lambda_cls'?" in line


@pytest.mark.cli
@pytest.mark.parametrize("override, expected", [
    ("--config.lamda_cls=3", "error: unknown config field 'lamda_cls'; did you mean "
                             "'lambda_cls'?"),
    ("--config.kd.temprature=2", "error: unknown config field 'kd.temprature'; did you mean "
                                 "'kd.temperature'?"),
    ("--config.zzz=1", "error: unknown config field 'zzz'; see cskd_tf/config.py for the "
                       "fields"),
])
def test_a_misspelled_override_is_one_clean_line(tmp_path, override, expected):
    # Flags are parsed before TensorFlow is imported: this fails in about a second.
    proc = cli("cskd-train", f"--config={CONFIG}", f"--workdir={tmp_path}/run", override)
    assert proc.returncode == 2 and proc.stderr.strip() == expected, proc.stderr
    assert not (tmp_path / "run").exists()


def test_config_json_round_trip():
    from cskd_tf.config import default_config, from_json, to_json

    config = default_config()
    config.lr_decay_epochs = (5, 7)
    config.search.temperature = (2.0, 4.0)
    again = from_json(to_json(config))
    assert again.lr_decay_epochs == (5, 7)
    assert tuple(again.search.temperature) == (2.0, 4.0)
    assert again.to_dict() == config.to_dict()

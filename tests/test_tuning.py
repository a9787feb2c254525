"""cskd-tune end to end on tiny data, through the command line (python -m cskd_tf.cli.tune).

Every search trains PreAct ResNet-10 at width 8 on scikit-learn's digits for one or two
epochs of two steps, so a trial costs seconds; the time goes into process start-up
(TensorFlow's import), which is why each test runs as few processes as it can.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cskd_tf.config import default_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "digits_quick.py")
TIMEOUT_S = 240  # per process: a hung search fails the test instead of the whole suite


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # One shard cache for the module: the first search builds it, the others reuse it.
    return str(tmp_path_factory.mktemp("tune_cache"))


def tiny_flags(cache_dir, num_epochs=1):
    return [f"--config={CONFIG}", "--config.model=preact_resnet10", "--config.model_width=8",
            f"--config.num_epochs={num_epochs}", "--config.steps_per_epoch=2",
            "--config.max_train_per_class=20", "--config.batch_size=16", "--config.verbose=0",
            f"--config.cache_dir={cache_dir}"]


def tune_command(*flags):
    return [sys.executable, "-m", "cskd_tf.cli.tune", *flags]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def start(command, log_path, env=None):
    """A process in its own group (so it can be killed with its children), logging to a file."""
    log = open(log_path, "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            env=env or clean_env(), start_new_session=True)


def kill(process):
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def run(command, log_path, env=None):
    process = start(command, log_path, env)
    try:
        process.wait(timeout=TIMEOUT_S)
    finally:
        kill(process)
    with open(log_path) as f:
        return process.returncode, f.read()


def read_trials(workdir):
    with open(os.path.join(workdir, "trials.csv")) as f:
        return list(csv.DictReader(f))


def check_best_loads_in_cskd_train(workdir, cache_dir, rows, num_epochs=1):
    """best.json is the best row's values and cskd-train's --config_overrides accepts it."""
    from cskd_tf.cli import common  # cskd-train's own loader

    with open(os.path.join(workdir, "best.json")) as f:
        best = json.load(f)
    (best_row,) = [r for r in rows if r["best"] == "1"]
    assert set(best) == {"lambda_cls", "temperature"}
    assert best["lambda_cls"] == pytest.approx(float(best_row["lambda_cls"]), rel=1e-5)
    assert best["temperature"] == float(best_row["temperature"])
    config = default_config()
    config.update(dict(model="preact_resnet10", model_width=8, num_epochs=num_epochs,
                       cache_dir=cache_dir))
    config.lock()  # as config_flags hands it to cskd-train
    loaded = common.load_config(config, os.path.join(workdir, "best.json"))
    assert loaded.lambda_cls == best["lambda_cls"]
    assert loaded.temperature == best["temperature"]


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
@pytest.mark.cli
def test_random_search_resumes_after_interruption(tmp_path, cache_dir):
    workdir = str(tmp_path / "search")
    command = tune_command(*tiny_flags(cache_dir), f"--workdir={workdir}", "--tuner=random",
                           "--max_trials=3")
    records = os.path.join(workdir, "keras_tuner", "trial_{}", "cskd_trial.json")

    # First run: killed as soon as trial 1 starts. (SIGKILL, as a preempted machine would;
    # Ctrl-C is not reliable here, TensorFlow may swallow the KeyboardInterrupt.)
    first_log = tmp_path / "first.log"
    process = start(command, first_log)
    try:
        deadline = time.time() + TIMEOUT_S
        while "trial 1 on tuner0" not in first_log.read_text():
            assert process.poll() is None, first_log.read_text()
            assert time.time() < deadline, "trial 1 never started"
            time.sleep(0.1)
    finally:
        kill(process)
    first = first_log.read_text()
    assert process.returncode == -signal.SIGKILL, first
    finished = {i: os.path.getmtime(records.format(i)) for i in range(3)
                if os.path.exists(records.format(i))}
    assert 0 in finished and 2 not in finished, first

    # Second run, the same command: continues without repeating finished trials.
    rc, second = run(command, tmp_path / "second.log")
    assert rc == 0, second
    assert "Resuming:" in second
    for i in finished:
        assert f"trial {i} on" not in second, second
        assert os.path.getmtime(records.format(i)) == finished[i]
    assert "trial 2 on tuner0" in second

    rows = read_trials(workdir)
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    # Completed means the trial really trained with TensorBoard + HParams logging on,
    # which Keras Tuner needs tensorboard for.
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3, rows
    assert os.listdir(os.path.join(workdir, "tensorboard", "trial_0"))
    for row in rows:
        for column in ("objective", "val_accuracy", "val_ece", "val_nll", "seconds"):
            assert row[column] != "", (column, row)
        assert row["objective"] == row["val_accuracy"]
        # What the model trained with is what the trial says.
        assert float(row["used_lambda_cls"]) == pytest.approx(float(row["lambda_cls"]), rel=1e-5)
        assert float(row["used_temperature"]) == float(row["temperature"])
    assert len({r["lambda_cls"] for r in rows}) == 3
    assert len({r["temperature"] for r in rows}) >= 2
    assert "Trials (3 completed" in second
    # Each finished trial says how far the search is and its pace (this run's trials only).
    assert "trial 2 COMPLETED" in second and "[3/3 trials, " in second, second
    assert "trials/s" in second or "s/trial" in second, second
    check_best_loads_in_cskd_train(workdir, cache_dir, rows)


@pytest.mark.slow
@pytest.mark.cli
def test_hyperband_two_brackets(tmp_path, cache_dir):
    workdir = str(tmp_path / "hyperband")
    # max_epochs = num_epochs = 2 with factor 2: bracket 1 trains two trials for one epoch
    # and continues the better for the second; bracket 0 trains from scratch for two.
    # Four trials reach the first trial of bracket 0.
    rc, out = run(tune_command(*tiny_flags(cache_dir, num_epochs=2), f"--workdir={workdir}",
                               "--tuner=hyperband", "--hyperband_factor=2", "--max_trials=4",
                               "--objective=val_nll"), tmp_path / "hyperband.log")
    assert rc == 0, out
    assert "2 bracket(s)" in out
    rows = read_trials(workdir)
    assert len(rows) == 4 and all(r["status"] == "COMPLETED" for r in rows), rows
    assert {r["bracket"] for r in rows} == {"0", "1"}
    (continued,) = [r for r in rows if r["from_trial"]]
    parent = next(r for r in rows if r["trial_id"] == continued["from_trial"])
    assert (continued["initial_epoch"], continued["epochs"], parent["epochs"]) == ("1", "2", "1")
    assert continued["lambda_cls"] == parent["lambda_cls"]
    assert all(r["objective"] == r["val_nll"] for r in rows)
    # The best trial is one trained for all num_epochs, not a one-epoch early round.
    (best_row,) = [r for r in rows if r["best"] == "1"]
    assert best_row["epochs"] == "2"
    full = [float(r["val_nll"]) for r in rows if r["epochs"] == "2"]
    assert float(best_row["val_nll"]) == min(full)
    check_best_loads_in_cskd_train(workdir, cache_dir, rows, num_epochs=2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.cli
def test_distributed_chief_and_two_workers(tmp_path, cache_dir):
    """Keras Tuner's chief/worker mode on 127.0.0.1; a trial that diverges is recorded too.

    λ is drawn from (0.5, 1e30) and config.seed=28 seeds the oracle so that trial 0 gets
    λ ≈ 2e16 (NaN loss: FAILED) and trial 1 λ ≈ 1.2 (COMPLETED): the search goes on.
    """
    workdir = str(tmp_path / "distributed")
    command = tune_command(*tiny_flags(cache_dir), f"--workdir={workdir}", "--tuner=random",
                           "--max_trials=2", "--config.search.lambda_cls=(0.5, 1e30)",
                           "--config.seed=28", "--chief_wait_s=120")
    address = dict(KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(free_port()))
    names = ["chief", "tuner0", "tuner1"]
    processes = [start(command, tmp_path / f"{name}.log",
                       clean_env(KERASTUNER_TUNER_ID=name, **address)) for name in names]
    try:
        deadline = time.time() + TIMEOUT_S
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for process in processes:
            kill(process)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in names}
    for name, process in zip(names, processes):
        assert process.returncode == 0, (name, logs[name])
    assert "Chief oracle listening on 127.0.0.1:" in logs["chief"]
    for name in ("tuner0", "tuner1"):
        assert f"Worker {name} done" in logs[name]

    rows = read_trials(workdir)
    assert [r["status"] for r in rows] == ["FAILED", "COMPLETED"], rows
    assert "nan" in rows[0]["error"] or "diverged" in rows[0]["error"], rows
    assert float(rows[0]["lambda_cls"]) > 1e10 and float(rows[1]["lambda_cls"]) < 5
    assert "trial 0 FAILED" in logs["chief"] and "trial 1 COMPLETED" in logs["chief"]
    # Every trial ran on a worker, and the chief learned which (through the trial records).
    assert {r["tuner_id"] for r in rows} <= {"tuner0", "tuner1"}
    assert all(r["tuner_id"] for r in rows)
    ran = {name: logs[name].split("trials run here: ")[1].split(")")[0] for name in names[1:]}
    print("trials per worker:", ran)
    with open(os.path.join(workdir, "best.json")) as f:
        assert json.load(f)["lambda_cls"] == pytest.approx(float(rows[1]["lambda_cls"]), rel=1e-5)
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["trials"] == {"COMPLETED": 1, "FAILED": 1} and summary["best_trial"] == "1"
    # The policy each worker trained under reaches the chief's table and summary.
    assert [r["precision"] for r in rows] == ["float32", "float32"]
    assert summary["precision"] == ["float32"]


def test_chief_address_in_use_is_a_config_error(monkeypatch):
    from cskd_tf.errors import ConfigError
    from cskd_tf.tuning import distributed

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
        monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(busy.getsockname()[1]))
        with pytest.raises(ConfigError,
                           match="cannot listen on 127.0.0.1:.*KERASTUNER_ORACLE_PORT"):
            distributed.check_chief_address()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(free_port()))
    distributed.check_chief_address()  # a free port passes


BAD_INPUTS = {
    "empty search space": (["--config.search.lambda_cls=()", "--config.search.temperature=()"],
                           "config.search defines nothing to tune"),
    "unknown objective": (["--objective=val_f1"], "unknown --objective 'val_f1'"),
    "range with min > max": (["--config.search.lambda_cls=(8.0, 0.25)"],
                             "config.search.lambda_cls=(8.0, 0.25) has min > max"),
}


@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_a_search_workdir_that_cannot_be_a_folder_is_a_workdir_error(tmp_path, where):
    # cskd-tune stopped here with a FileExistsError/NotADirectoryError traceback.
    from cskd_tf.errors import WorkdirError
    from cskd_tf.tuning.search import prepare_workdir

    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    workdir = existing if where == "file" else existing / "search"
    with pytest.raises(WorkdirError, match=f"cannot create the workdir {workdir} .*; choose "
                                           "another --workdir"):
        prepare_workdir(str(workdir), {"tuner": "random"}, overwrite=True)
    assert existing.read_text() == "keep me"


@pytest.mark.cli
def test_bad_input_is_one_line_error(tmp_path, cache_dir):
    # The three processes run side by side: each spends its time importing TensorFlow.
    processes = {}
    for name, (flags, _) in BAD_INPUTS.items():
        log = tmp_path / (name.replace(" ", "_") + ".log")
        processes[name] = (start(tune_command(*tiny_flags(cache_dir), f"--workdir={tmp_path}/w",
                                              "--max_trials=2", *flags), log), log)
    try:
        for name, (process, log) in processes.items():
            process.wait(timeout=TIMEOUT_S)
    finally:
        for process, _ in processes.values():
            kill(process)
    for name, (process, log) in processes.items():
        expected = BAD_INPUTS[name][1]
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert process.returncode == 2, (name, lines)
        assert len(errors) == 1 and expected in errors[0], (name, lines)
        assert "Traceback" not in log.read_text(), name
    # Rejected before anything was written.
    assert not os.path.exists(tmp_path / "w" / "keras_tuner")

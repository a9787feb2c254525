"""Progress of the long steps: cskd_tf/progress.py and where it is used."""

import io
import os
import re
import subprocess
import sys

import pytest

from cskd_tf import progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


def test_rate_and_eta_text():
    assert progress.rate_and_eta(50, 200, 10.0, "images") == "5 images/s, ETA 30s"
    assert progress.rate_and_eta(3, 10, 300.0, "trials") == "100 s/trial, ETA 11m40s"
    assert progress.rate_and_eta(10, 10, 2.0, "batches") == "5 batches/s"  # done: no ETA
    assert progress.rate_and_eta(2, None, 3.0, "batches") == "1.5 s/batch"  # not "batche"
    assert progress.rate_and_eta(0, 10, 2.0, "images") == "- images/s"
    assert progress.format_duration(7300) == "2h01m"


def test_log_file_gets_a_line_per_interval_and_a_closing_line(clock):
    out = io.StringIO()  # not a TTY
    with progress.Progress("job", total=100, unit="images", stream=out,
                           log_interval_s=10) as bar:
        clock.now += 5
        bar.update(10)  # within the interval: nothing yet
        clock.now += 5
        bar.update(10)
        clock.now += 10
        bar.update(30)
    lines = out.getvalue().splitlines()
    assert lines == ["job: 20/100 images (2 images/s, ETA 40s)",
                     "job: 50/100 images (2.5 images/s, ETA 20s)",
                     "job: 50 images in 20s (2.5 images/s)"]


def test_terminal_line_is_rewritten_in_place(clock):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    with progress.Progress("job", total=4, unit="batches", stream=out) as bar:
        for _ in range(4):
            clock.now += 1
            bar.update(1)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 5  # 4 updates + the closing line
    assert text.rstrip("\n").split("\r")[-1].startswith("job: 4 batches in 4s (1 batches/s)")


def test_verbose_0_is_silent_and_an_error_says_where_it_stopped(clock):
    out = io.StringIO()
    with progress.Progress("quiet", total=3, stream=out, verbose=0, log_interval_s=0) as bar:
        bar.update(3)
    assert out.getvalue() == ""
    with pytest.raises(RuntimeError):
        with progress.Progress("job", total=3, stream=out) as bar:
            bar.update(1)
            raise RuntimeError("boom")
    assert out.getvalue() == "job: stopped after 1 images\n"


def test_steps_number_each_step(clock):
    out = io.StringIO()
    steps = progress.Steps("export m/1", total=2, stream=out)
    steps.next("loading")
    clock.now += 65
    steps.next("writing")
    assert out.getvalue().splitlines() == ["export m/1 [1/2] loading (0s)",
                                           "export m/1 [2/2] writing (1m05s)"]


def test_evaluation_progress_counts_batches(capsys):
    import tensorflow as tf

    from cskd_tf.evaluation.inference import evaluate, logits_and_features

    class TinyModel:  # logits_and_features() only needs forward()
        def forward(self, x, training=False):
            logits = tf.concat([x, -x, tf.zeros_like(x)], axis=1)
            return {"logits": logits, "features": x}

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.range(10, dtype=tf.float32)[:, None], tf.zeros(10, tf.int64))).batch(4)
    model = TinyModel()
    logits, _, labels = logits_and_features(model, dataset)
    assert logits.shape == (10, 3) and labels.shape == (10,)
    assert capsys.readouterr().err == ""  # quiet by default (per-epoch validation, plots)
    result = evaluate(model, dataset, label="evaluating test")
    err = capsys.readouterr().err
    assert result["num_examples"] == 10
    assert re.search(r"evaluating test: 3 batches in \d+s \([\d.]+ (batches/s|s/batch)\)", err), err
    evaluate(model, dataset, verbose=0)
    assert capsys.readouterr().err == ""


@pytest.mark.cli
def test_cache_build_shows_progress_with_a_rate_at_default_verbosity(tmp_path):
    """build_cache through its CLI (absl's log level at WARNING), no verbosity flag."""
    command = [sys.executable, "-m", "cskd_tf.cli.build_cache",
               f"--config={os.path.join(REPO, 'configs', 'digits_quick.py')}",
               "--config.max_train_per_class=10", f"--config.cache_dir={tmp_path}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env,
                           timeout=240)
    assert first.returncode == 0, first.stderr
    assert "building the shard cache" in first.stderr
    for split in ("train", "val", "test"):
        assert re.search(rf"shard cache, {split} split: \d+ images in \d+s "
                         r"\([\d.]+ (images/s|s/image)\)", first.stderr), first.stderr
    assert '"cache":' in first.stdout  # stdout keeps only the result
    # A second run reuses the cache: nothing to report.
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=240)
    assert second.returncode == 0 and "shard cache" not in second.stderr, second.stderr

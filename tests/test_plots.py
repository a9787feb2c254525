"""Tests of cskd_tf.evaluation.plots / domains / history on synthetic arrays."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cskd_tf.errors import ConfigError
from cskd_tf.evaluation import domains as dom
from cskd_tf.evaluation import history, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC and os.path.getsize(path) > 1000


def synthetic(n=120, c=6, seed=0, sharp=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), labels] += 1.5  # mostly right, some mistakes
    probs = np.exp(sharp * logits)
    probs /= probs.sum(axis=1, keepdims=True)
    features = rng.normal(size=(n, 8)) + 3.0 * np.eye(c, 8)[labels]
    return probs, features, labels


def test_reliability(tmp_path):
    p1, _, y = synthetic(sharp=3.0)
    p2, _, _ = synthetic(sharp=0.7)
    path = str(tmp_path / "rel.png")
    eces = plots.plot_reliability([("CE", p1, y), ("CS-KD", p2, y)], path)
    assert_png(path)
    assert len(eces) == 2 and all(0 <= e <= 100 for e in eces)


def test_reliability_before_and_after_temperature_scaling(tmp_path):
    from cskd_tf.evaluation.calibration import fit_temperature

    rng = np.random.default_rng(0)
    logits = 2.0 * rng.normal(size=(600, 6))
    labels = (plots.softmax(logits).cumsum(axis=1) > rng.random((600, 1))).argmax(axis=1)
    over = 4.0 * logits  # over-confident: T ~ 4 undoes it
    panels = plots.temperature_scaling_panels("CE", over, labels, fit_temperature(over, labels))
    assert panels[0][0] == "CE: before TS" and panels[1][0].startswith("CE: after TS (T = ")
    assert "fit on val" in panels[1][0]
    path = str(tmp_path / "rel_ts.png")
    before, after = plots.plot_reliability(panels, path, max_cols=2)
    assert_png(path)
    assert after < 0.5 * before


def test_misclassified(tmp_path):
    probs, _, labels = synthetic()
    means, count = plots.mean_topk_misclassified(probs, labels, k=5)
    wrong = probs.argmax(1) != labels
    assert count == wrong.sum() > 0
    assert means[0] == pytest.approx(probs[wrong].max(1).mean())
    assert np.all(np.diff(means) <= 0)  # sorted scores
    # Hand example: one wrong sample [0.6, 0.3, 0.1] (label 1), one right one.
    m, n = plots.mean_topk_misclassified([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1]], [1, 1], k=5)
    assert n == 1 and np.allclose(m, [0.6, 0.3, 0.1])
    path = str(tmp_path / "mis.png")
    plots.plot_misclassified([("CE", probs, labels), ("CS-KD", probs ** 0.5 / 2, labels)], path)
    assert_png(path)


def test_tsne(tmp_path):
    _, features, labels = synthetic(n=60, c=6)
    path = str(tmp_path / "tsne.png")
    embeddings = plots.plot_tsne([("CE", features, labels)], path, num_classes=3,
                                 max_per_class=8, class_names=[f"c{i}" for i in range(6)])
    assert_png(path)
    assert embeddings[0].shape[1] == 2 and embeddings[0].shape[0] <= 24
    classes = plots.choose_classes(labels, 3, seed=0)
    assert len(classes) == 3 and set(classes) <= set(labels)


def test_curves_from_csv_with_resume_duplicates(tmp_path):
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,loss,accuracy,val_accuracy,val_ece\n"
                        "0,2.0,0.3,0.35,0.1\n1,1.5,0.5,,\n"
                        "1,1.4,0.55,0.6,0.05\n2,1.0,0.7,0.7,0.04\n")
    h = history.read_history_csv(str(csv_path))
    assert h["epoch"].tolist() == [0, 1, 2]
    assert h["loss"].tolist() == [2.0, 1.4, 1.0]  # the re-run epoch's later row wins
    path = str(tmp_path / "curves.png")
    drawn = plots.plot_curves([("run", h)], path, keys=("loss", "val_ece", "missing"))
    assert drawn == ["loss", "val_ece"]
    assert_png(path)
    with pytest.raises(ValueError, match="available"):
        plots.plot_curves([("run", h)], path, keys=("nothing_logged",))


def test_history_from_tensorboard(tmp_path):
    import tensorflow as tf

    logdir = str(tmp_path / "tensorboard")
    for sub, name, values in (("train", "epoch_loss", [2.0, 1.0]),
                              ("validation", "epoch_ece", [0.2, 0.1])):
        writer = tf.summary.create_file_writer(os.path.join(logdir, sub))
        with writer.as_default():
            for step, value in enumerate(values):
                tf.summary.scalar(name, value, step=step)
        writer.close()
    h = history.load_history(str(tmp_path), source="auto")  # no history.csv: TensorBoard
    assert h["epoch"].tolist() == [0, 1]
    assert np.allclose(h["loss"], [2.0, 1.0]) and np.allclose(h["val_ece"], [0.2, 0.1])


def test_domain_confusion_hand_example(tmp_path):
    domains = dom.parse_domains("a:0-1,b:2-3,c:4+5")
    assert [d for d, _ in domains] == ["a", "b", "c"]
    assert domains[2][1].tolist() == [4, 5]
    labels = [0, 1, 1, 3, 2, 4]
    preds = [1, 1, 2, 3, 5, 4]  # a: 2 right domain of 3, b: 1 of 2 -> c, c: 1 of 1
    m = dom.domain_confusion(labels, preds, domains, num_classes=6)
    expected = np.array([[200 / 3, 100 / 3, 0], [0, 50, 50], [0, 0, 100]])
    assert np.allclose(m, expected)
    path = str(tmp_path / "hier.png")
    plots.plot_domain_confusion([("CE", m), ("CS-KD", m)], ["a", "b", "c"], path)
    assert_png(path)


def test_parse_domains_forms_and_errors(tmp_path):
    json_domains = dom.parse_domains('{"x": "0-2", "y": [3, 5]}')
    assert json_domains[1][1].tolist() == [3, 5]
    spec_file = tmp_path / "domains.json"
    spec_file.write_text('{"x": "0-1", "y": "2-3"}')
    assert len(dom.parse_domains(str(spec_file))) == 2
    with pytest.raises(ConfigError, match="both domains"):
        dom.parse_domains("x:0-3,y:3-5")
    with pytest.raises(ConfigError, match="without a domain"):
        dom.class_to_domain(dom.parse_domains("x:0-1,y:2-3"), num_classes=6)
    with pytest.raises(ConfigError, match="not a class index"):
        dom.parse_domains("x:zero-1,y:2")


@pytest.mark.cli
def test_plot_cli_curves(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"dataset": "digits", "model": "m", "method": "cskd"}')
    (run / "history.csv").write_text("epoch,loss,accuracy\n0,2.0,0.3\n1,1.0,0.6\n")
    out = tmp_path / "curves.png"
    cmd = [sys.executable, "-m", "cskd_tf.cli.plot"]
    ok = subprocess.run(cmd + ["curves", f"--workdir={run}", f"--output={out}"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert_png(out)


def test_plot_cli_refuses_an_output_it_cannot_write_before_plotting(tmp_path):
    # A folder was written as folder.png while "wrote folder" was printed; a path below a
    # file ended in a FileExistsError traceback; an unknown ending in matplotlib's error.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"dataset": "digits", "model": "m", "method": "cskd"}')
    (run / "history.csv").write_text("epoch,loss,accuracy\n0,2.0,0.3\n1,1.0,0.6\n")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    cmd = [sys.executable, "-m", "cskd_tf.cli.plot", "curves", f"--workdir={run}"]
    for output, expected in (
            (tmp_path / "folder.png", "is a folder; pass --output=FILE, a file path"),
            (tmp_path / "notes.txt" / "c.png", f"lies below {tmp_path / 'notes.txt'}, a file"),
            (tmp_path / "curves.txt", "must end in .png, .pdf, .svg")):
        proc = subprocess.run(cmd + [f"--output={output}"], capture_output=True, text=True,
                              timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and lines[-1].startswith("error: "), proc.stderr
        assert expected in lines[-1] and "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["folder.png", "notes.txt", "run"]

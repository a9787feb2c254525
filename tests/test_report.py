"""Tests of cskd_tf.evaluation.report and the cskd-report command on made-up runs."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from cskd_tf.errors import ConfigError, WorkdirError
from cskd_tf.evaluation import report


def make_run(root, name, *, dataset="tfds:cifar100", model="resnet18", method="ce", seed=0,
             top1=None, splits=("val", "test"), **extra):
    """A run dir with config.json, and metrics.json when ``top1`` is given."""
    path = os.path.join(root, name)
    os.makedirs(path)
    config = {"dataset": dataset, "model": model, "method": method, "seed": seed,
              "lambda_cls": 1.0, **extra}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    if top1 is not None:
        metrics = {"top1_error": top1, "top5_error": top1 / 4, "ece": 10.0 - seed,
                   "recall_at_1": 100.0 - top1, "nll": 1.0, "num_examples": 100}
        with open(os.path.join(path, "metrics.json"), "w") as f:
            json.dump({s: metrics for s in splits}, f)
    return path


@pytest.fixture
def runs(tmp_path):
    root = str(tmp_path / "runs")
    # CIFAR-100: CE 24.0/24.2 (mean 24.1), CS-KD 22.0/21.98 (mean 21.99): -8.755%.
    make_run(root, "c100/ce_s0", method="ce", seed=0, top1=24.0)
    make_run(root, "c100/ce_s1", method="ce", seed=1, top1=24.2)
    make_run(root, "c100/cskd_s0", method="cskd", seed=0, top1=22.0)
    make_run(root, "c100/cskd_s1", method="cskd", seed=1, top1=21.98)
    # CUB: CS-KD has one unfinished seed.
    make_run(root, "cub/ce_s0", dataset="tfds:caltech_birds2011", method="ce", top1=46.0)
    make_run(root, "cub/cskd_s0", dataset="tfds:caltech_birds2011", method="cskd", top1=33.0)
    make_run(root, "cub/cskd_s1", dataset="tfds:caltech_birds2011", method="cskd", seed=1)
    return root


def test_find_run_dirs_recurses_and_stops_at_runs(runs):
    found = report.find_run_dirs([runs, os.path.join(runs, "c100")])
    assert len(found) == 7  # the nested path does not list runs twice
    assert all(os.path.exists(os.path.join(p, "config.json")) for p in found)


def test_find_run_dirs_errors(tmp_path):
    with pytest.raises(WorkdirError, match="does not exist"):
        report.find_run_dirs([str(tmp_path / "nope")])
    with pytest.raises(WorkdirError, match="no training run"):
        report.find_run_dirs([str(tmp_path)])


def test_aggregation_mean_std_and_change(runs):
    groups = report.group_runs(report.load_run(p) for p in report.find_run_dirs([runs]))
    ce = groups[("tfds:cifar100", "resnet18", "ce")].stat("test", "top1_error")
    cskd = groups[("tfds:cifar100", "resnet18", "cskd")].stat("test", "top1_error")
    assert ce.mean == pytest.approx(24.1) and ce.n == 2
    assert ce.std == pytest.approx(0.141421356, rel=1e-6)  # sample std (ddof=1)
    assert cskd.mean == pytest.approx(21.99)
    assert report.relative_change(cskd.mean, ce.mean) == pytest.approx(-8.7552, abs=1e-3)
    cub = groups[("tfds:caltech_birds2011", "resnet18", "cskd")]
    assert not cub.complete and cub.status == "incomplete (1/2 runs finished)"
    assert list(groups)[0][2] == "ce"  # the baseline row comes first


def test_markdown_tables(runs):
    text = report.build_report([runs], "markdown")
    assert "test split" in text
    assert "| Method | CIFAR-100 | CUB-200-2011 |" in text  # the paper's column order
    lines = text.splitlines()
    cskd_row = next(line for line in lines
                    if line.startswith("| CS-KD |") and "−8.8%" in line)
    # Best CIFAR-100 top-1 in bold, with the relative change from CE.
    assert "**21.99 ± 0.01 (−8.8%)**" in cskd_row
    # The unfinished CUB group is visible, not dropped.
    assert "incomplete (1/2 runs finished)" in cskd_row
    assert "cub/cskd_s1" in text  # named in the notes
    # Table 6: the R@1 column is higher-is-better: CS-KD (78.01) is bold.
    assert "**78.01 ± 0.01**" in text
    table = [line for line in lines if line.startswith("|")]
    assert len({row.count("|") for row in table[:4]}) == 1  # well-formed rows


def test_latex_and_csv(runs):
    tex = report.build_report([runs], "latex")
    assert r"\textbf{21.99 $\pm$ 0.01 ($-$8.8\%)}" in tex
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 3
    rows = list(csv.DictReader(io.StringIO(report.build_report([runs], "csv"))))
    assert len(rows) == 4
    by = {(r["dataset"], r["method"]): r for r in rows}
    assert float(by["tfds:cifar100", "cskd"]["top1_error_mean"]) == pytest.approx(21.99)
    assert by["tfds:cifar100", "cskd"]["top1_error_best"] == "1"
    change = float(by["tfds:cifar100", "cskd"]["top1_error_change_from_ce_pct"])
    assert change == pytest.approx(-8.76)
    assert by["tfds:caltech_birds2011", "cskd"]["status"] == "incomplete"
    assert by["tfds:caltech_birds2011", "cskd"]["runs_finished"] == "1"


def test_split_choice(tmp_path):
    root = str(tmp_path)
    make_run(root, "a", top1=20.0, splits=("val", "test"))
    make_run(root, "b", method="cskd", top1=19.0, splits=("val",))
    assert "val split" in report.build_report([root])  # not every run has test
    with pytest.raises(ConfigError, match="no test metrics"):
        report.build_report([root], split="test")


def test_group_notes_and_subsets(tmp_path):
    root = str(tmp_path)
    make_run(root, "a", top1=20.0, seed=0)
    make_run(root, "b", top1=21.0, seed=0, lambda_cls=3.0)
    # A budgeted subset of the same dataset is a separate column, not averaged in.
    make_run(root, "c", top1=50.0, max_train_per_class=10)
    text = report.build_report([root])
    assert "repeat" in text and "lambda_cls" in text
    assert "CIFAR-100 (max_train_per_class=10)" in text


@pytest.mark.cli
def test_cli_nonexistent_dir_is_one_line_error(tmp_path):
    # A subprocess: absl flags are process-global and app.run exits.
    proc = subprocess.run([sys.executable, "-m", "cskd_tf.cli.report", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "does not exist" in lines[0]


@pytest.mark.cli
def test_cli_unwritable_output_is_one_line_error(tmp_path):
    run = make_run(str(tmp_path / "runs"), "ce", top1=30.0)
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    for output, reason in ((tmp_path / "folder", "Is a directory"),
                           (tmp_path / "notes.txt" / "table.md",
                            f"{tmp_path / 'notes.txt'} is a file, not a folder")):
        proc = subprocess.run([sys.executable, "-m", "cskd_tf.cli.report", run,
                               f"--output={output}"], capture_output=True, text=True, timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0] == (f"error: cannot write --output={output} ({reason}); pass "
                            "--output=FILE, a file path in a folder you can write")
    assert (tmp_path / "notes.txt").read_text() == "keep me"



def write_history(path, rows):
    """history.csv as HistoryCSVLogger writes it: epoch plus sorted log keys."""
    keys = sorted({k for row in rows for k in row})
    with open(os.path.join(path, "history.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch"] + keys)
        writer.writeheader()
        for epoch, row in enumerate(rows):
            writer.writerow({"epoch": epoch, **row})


def test_best_test_epoch_selection(tmp_path):
    root = str(tmp_path)
    # Final model (metrics.json): 30% error. Best test epoch: epoch 2 (1-based) at 75%
    # accuracy; epoch 3 ties it and loses (the reference keeps the first best).
    run = make_run(root, "ce", method="ce", top1=30.0, splits=("test",), protocol="paper")
    accuracies = (0.5, 0.75, 0.75, 0.7)
    write_history(run, [{"loss": 1.0, "test_accuracy": a, "test_top5_accuracy": 0.9 + e / 100,
                         "test_ece": 0.05 * (e + 1), "test_nll": 1.0 + e, "test_loss": 1.0 + e}
                        for e, a in enumerate(accuracies)])
    cskd = make_run(root, "cskd", method="cskd", top1=28.0, splits=("test",), protocol="paper")
    write_history(cskd, [{"test_accuracy": 0.8, "test_top5_accuracy": 0.95, "test_ece": 0.01,
                          "test_nll": 0.5}])
    final = report.build_report([root])
    assert "30.00" in final and "test-selected" not in final.lower()

    text = report.build_report([root], selection="best_test_epoch")
    assert "| Cross-entropy | 25.00 |" in text  # 100 * (1 - 0.75), not the final 30.00
    assert "| CS-KD | **20.00 (−20.0%)** |" in text
    assert text.count("[test-selected: best test epoch]") == 2  # both tables' titles
    assert "TEST-SELECTED" in text and "chosen epochs 1–2" in text
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(
        report.build_report([root], "csv", selection="best_test_epoch")))}
    assert rows["ce"]["selection"] == "best_test_epoch"
    # Every number comes from epoch 2 (index 1): top-5, ECE (percent) and NLL.
    assert float(rows["ce"]["top5_error_mean"]) == pytest.approx(9.0)
    assert float(rows["ce"]["ece_mean"]) == pytest.approx(10.0)
    assert float(rows["ce"]["nll_mean"]) == pytest.approx(2.0)
    assert rows["ce"]["recall_at_1_mean"] == ""  # not logged per epoch

    with pytest.raises(ConfigError, match="reports the test split"):
        report.build_report([root], split="val", selection="best_test_epoch")
    # A tune run logs no per-epoch test metrics: a one-line error naming it.
    make_run(root, "tuned", method="ce", top1=29.0, seed=1)
    write_history(os.path.join(root, "tuned"), [{"val_accuracy": 0.9}])
    with pytest.raises(ConfigError, match="tuned/history.csv has no per-epoch test_accuracy"):
        report.build_report([root], selection="best_test_epoch")


@pytest.mark.cli
def test_cli_selection_flag(tmp_path):
    root = str(tmp_path)
    run = make_run(root, "ce", top1=30.0, splits=("test",))
    write_history(run, [{"test_accuracy": 0.6}, {"test_accuracy": 0.8}])
    proc = subprocess.run([sys.executable, "-m", "cskd_tf.cli.report", root,
                           "--selection=best_test_epoch"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "20.00" in proc.stdout and "[test-selected: best test epoch]" in proc.stdout


def test_ece_after_temperature_scaling_column(tmp_path):
    root = str(tmp_path)
    for method, ece_ts in (("ce", 4.0), ("cskd", 2.5)):
        path = make_run(root, method, method=method, top1=20.0)
        metrics = json.load(open(os.path.join(path, "metrics.json")))
        for split in metrics.values():
            split.update(ece_ts=ece_ts, nll_ts=0.9, temperature_ts=1.5)
        json.dump(metrics, open(os.path.join(path, "metrics.json"), "w"))
    make_run(root, "paper_run", method="mixup", top1=21.0)  # no val: no TS fields
    text = report.build_report([root])
    header = "| Method | Top-1 error ↓ | Top-5 error ↓ | ECE ↓ | ECE after TS ↓ | R@1 ↑ |"
    assert header in text
    table6 = text[text.index("**Table 6"):]
    ece_ts = {line.split("|")[1].strip(): line.split("|")[5].strip()
              for line in table6.splitlines() if line.startswith("| ") and "Method" not in line}
    # Best (lowest) in bold; a run without a val split has no TS numbers.
    assert ece_ts == {"Cross-entropy": "4.00", "CS-KD": "**2.50**", "Mixup": "–"}
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(report.build_report([root],
                                                                                   "csv")))}
    assert rows["cskd"]["ece_ts_best"] == "1" and rows["ce"]["temperature_ts_mean"] == "1.5000"
    assert rows["ce"]["temperature_ts_best"] == "0"  # no "best" temperature


def test_titles_are_the_registries_display_names():
    """Column titles come from the source registry (TFDS members from TFDS_TITLES), read
    without importing the data package (cskd-report never imports TensorFlow)."""
    from cskd_tf.registry import SOURCES

    for entry in SOURCES.entries(declared=True):
        if not entry.family:
            assert report.dataset_name(entry.name) == entry.display_name
    assert report.dataset_name("tinyimagenet (max_classes=10)") == "TinyImageNet (max_classes=10)"
    assert report.dataset_name("tfds:cifar100") == "CIFAR-100"
    assert report.dataset_name("tfds:oxford_flowers102") == "tfds:oxford_flowers102"
    code = ("import sys; from cskd_tf.evaluation import report; "
            "assert report.dataset_name('shards') == 'Shard cache'; "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_method_rows_are_named_by_the_methods():
    """Row titles are the display names the method modules declare (read unimported); the
    paper's order places the known ones, any other method comes last."""
    from cskd_tf.registry import METHODS

    names = report.method_names()
    assert set(names) == set(METHODS.names(declared=True)) >= set(report.METHOD_ORDER)
    assert (names["cskd"], names["kd_cskd"], names["ce"]) == ("CS-KD", "KD + CS-KD",
                                                             "Cross-entropy")
    assert report.method_name("not_a_method") == "not_a_method"
    assert sorted(["zz_new", "cskd", "ce"], key=report._method_order) == ["ce", "cskd", "zz_new"]

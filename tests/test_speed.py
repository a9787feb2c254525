"""The speed benchmarks beside the library (benchmarks/speed/): the FLOP counter against a
hand computation, and both modes' command lines at a toy size."""

import json
import os
import subprocess
import sys

import pytest

from conftest import one_line_error

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# benchmarks/ is not installed; `python -m pytest` from the root finds it through the
# working directory, a bare `pytest` through this.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def tiny_functional_model():
    """A model whose FLOPs are counted by hand in the test below."""
    import keras
    from keras import layers

    inner_in = keras.Input((4, 4, 8))
    inner = keras.Model(inner_in, layers.SeparableConv2D(6, 3, padding="valid")(inner_in))
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    x = layers.Conv2D(8, 1, groups=2, use_bias=False)(x)
    x = inner(x)
    x = layers.GlobalAveragePooling2D()(x)
    shared = layers.Dense(6)
    x = shared(shared(x))
    return keras.Model(inputs, layers.Dense(5)(x))


def test_forward_flops_match_a_hand_count():
    from benchmarks.speed.flops import forward_flops

    expected = (
        2 * (4 * 4) * (3 * 3 * 3 * 4)         # Conv2D 3x3, stride 2: 8x8x3 -> 4x4x4
        + 2 * (4 * 4) * (3 * 3 * 4 * 2)       # DepthwiseConv2D, multiplier 2 -> 4x4x8
        + 2 * (4 * 4) * (1 * 1 * 4 * 8)       # grouped 1x1 Conv2D: C_in/groups = 4
        + 2 * (2 * 2) * (3 * 3 * 8 + 8 * 6)   # nested SeparableConv2D, valid -> 2x2x6
        + 2 * (2 * 6 * 6)                     # the shared Dense(6), applied twice
        + 2 * 6 * 5)                          # Dense(5); BN, ReLU, pooling: 0
    assert expected == 7948
    assert forward_flops(tiny_functional_model()) == expected


def test_forward_flops_of_a_backbone_and_its_training_model():
    from benchmarks.speed.flops import flop_rates, forward_flops
    from cskd_tf import losses, models
    from cskd_tf.config import default_config

    backbone = models.build("preact_resnet10", num_classes=5, input_shape=(8, 8, 3), width=4)
    count = forward_flops(backbone)
    # The stem convolution alone: 3x3 over 8x8 positions, 3 -> 4 channels.
    assert count > 2 * 8 * 8 * 3 * 3 * 3 * 4
    method = losses.get_method("cskd", default_config())
    assert forward_flops(models.CSKDModel(backbone, method=method)) == count
    with pytest.raises(ValueError, match="not a functional Keras model"):
        forward_flops(object())
    rates = flop_rates("cskd", 10**9, 10.0, peak_gflops=80.0)
    assert rates == {"forward_gflop": 1.0, "train_flop_factor": 4, "gflop_per_s": 40.0,
                     "peak_fraction": 0.5}
    assert flop_rates("ce", 10**9, 10.0)["gflop_per_s"] == 30.0
    assert flop_rates("kd", 10**9, 10.0)["gflop_per_s"] is None


def speed(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "benchmarks.speed", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


TOY = ["--model=preact_resnet10", "--batch_size=8", "--image_size=8", "--steps=2",
       "--warmup=1", "--pipeline_batches=2"]


@pytest.mark.cli
def test_model_alone_reports_every_figure(tmp_path):
    """model_alone at a toy size; bad flags and a missing mode are one line."""
    result = speed("model_alone", *TOY, "--width=4", "--num_classes=5", "--peak_gflops=1000",
                   f"--output={tmp_path / 'speed.json'}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(tmp_path / "speed.json"))
    rows = report["train_steps"]
    assert [(r["method"], r["precision"], r["xla"]) for r in rows] == [
        ("ce", "float32", False), ("cskd", "float32", False)]
    for row, factor in zip(rows, (3, 4)):
        assert row["train_flop_factor"] == factor
        assert row["gflop_per_s"] == pytest.approx(
            factor * row["forward_gflop"] * row["anchor_images_per_s"])
        assert row["peak_fraction"] == pytest.approx(row["gflop_per_s"] / 1000)
    assert report["eval_images_per_s"] > 0 and report["pipeline"]["pairs_per_s"] > 0
    assert "CS-KD / CE step time (xla=off,float32)" in result.stdout
    assert "| GFLOP/s | of peak |" in result.stdout and "ce 3x, cskd 4x" in result.stdout

    assert "xla: 'maybe' is not one of" in one_line_error(speed("model_alone", "--xla=maybe"))
    assert "resolve to the same setting" in one_line_error(speed("model_alone",
                                                                 "--xla=auto,off"))
    # The training data's flags belong to end_to_end.
    assert "max_classes" in one_line_error(speed("model_alone", "--max_classes=5"))
    assert "give the mode first" in one_line_error(speed("--steps=2"))


@pytest.mark.slow
@pytest.mark.cli
def test_end_to_end_times_the_training_path(tmp_path):
    """end_to_end: model.fit on digits, one process per variant, every figure positive and
    finite; a bad flag value is one line."""
    bad = speed("end_to_end", *TOY, "--precision=float64")
    assert "precision: 'float64' is not one of" in one_line_error(bad)

    result = speed("end_to_end", *TOY, "--width=2", "--batch_size=16", "--max_classes=5",
                   f"--output={tmp_path / 'speed.json'}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(tmp_path / "speed.json"))
    assert report["setup"]["dataset"] == "digits" and report["setup"]["num_classes"] == 5
    assert {"platform", "cpus", "gpu", "tensorflow", "cpu_bf16_flags"} <= set(report["machine"])
    rows = report["train_steps"]
    assert [(r["method"], r["precision"]) for r in rows] == [("ce", "float32"),
                                                             ("cskd", "float32")]
    for row in rows:
        assert row["steps_timed"] == 2 and row["peak_fraction"] is None
        for field in ("step_seconds", "step_seconds_median", "anchor_images_per_s",
                      "gflop_per_s", "cpu_seconds_per_step", "pipeline_cpu_seconds_per_batch",
                      "pipeline_cpu_share", "peak_memory_mib"):
            assert 0 < row[field] < float("inf"), (field, row)
        assert row["anchor_images_per_s"] == pytest.approx(16 / row["step_seconds"])
    ratio = report["cskd_over_ce_step_time"]["xla=off,float32"]
    assert ratio == pytest.approx(rows[1]["step_seconds"] / rows[0]["step_seconds"])
    assert "| cskd | float32 | off |" in result.stdout and "of peak" not in result.stdout


def test_each_16_bit_variant_is_compared_with_float32_of_its_method_and_xla():
    """precision_speedups and the table's "x the float32" lines (what `--precision=float32,
    mixed_bfloat16` prints next to both rows)."""
    from benchmarks.speed.common import Variant, precision_speedups
    from benchmarks.speed.table import format_table

    plan = [Variant("ce", "float32", "off"), Variant("cskd", "float32", "off"),
            Variant("ce", "mixed_bfloat16", "off"), Variant("cskd", "mixed_bfloat16", "off"),
            Variant("cskd", "mixed_bfloat16", "on")]  # no float32 with XLA on: no ratio
    steps = [2.0, 2.6, 1.25, 1.6, 3.9]
    rows = [{"method": v.method, "precision": v.precision, "xla": v.xla == "on",
             "step_seconds": t, "anchor_images_per_s": 128 / t} for v, t in zip(plan, steps)]
    speedups = precision_speedups(plan, rows)
    assert speedups == {"ce,xla=off,mixed_bfloat16": pytest.approx(2.0 / 1.25),
                        "cskd,xla=off,mixed_bfloat16": pytest.approx(2.6 / 1.6)}
    report = {"mode": "model alone", "train_steps": rows, "cskd_over_ce_step_time": {},
              "speedup_over_float32": speedups,
              "setup": {"num_classes": 5, "model": "m", "width": 4, "batch_size": 128,
                        "image_size": 32, "timed_steps": 2, "warmup": 1}}
    text = format_table(report)
    assert "mixed_bfloat16 / float32 (ce, xla=off): 1.60x the float32 anchor images/s" in text
    assert "mixed_bfloat16 / float32 (cskd, xla=off): 1.62x" in text
    assert "xla=on" not in text

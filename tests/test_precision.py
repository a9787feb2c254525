"""config.mixed_precision: "auto" and its resolution, where 16-bit stops, and the record.

* the resolver (cskd_tf/runtime.py) with the CPU flags, the GPU check and $CSKD_PRECISION
  replaced: bfloat16 hardware -> mixed_bfloat16, none or a GPU -> float32;
* under mixed_bfloat16 every method's train step gives float32 logits and float32 finite
  loss terms and gradients, and batch norm computes its statistics in float32;
* the record: a run's data.json names its policy, resuming refuses another policy, and
  cskd-report never averages runs of different precision;
* end to end, with the default precision (auto): cskd-train on digits prints and records
  what "auto" resolved to here (mixed_bfloat16 on a CPU with bfloat16 hardware), and the run's
  model.keras reloads under the recorded policy and predicts float32.
"""

import json
import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import console_script
from cskd_tf import config as config_lib
from cskd_tf import registry
from cskd_tf import runtime
from cskd_tf.errors import ConfigError, WorkdirError

ROOT = os.path.join(os.path.dirname(__file__), "..")
LABELS = np.array([0, 3, 1, 4, 2, 2, 0, 1], np.int64)


# ------------------------------------------------------------------------------ resolver
@pytest.fixture
def machine(monkeypatch):
    """Sets what the resolver sees: ``machine(flags, gpu)``; $CSKD_PRECISION unset."""
    monkeypatch.delenv(runtime.PRECISION_ENV, raising=False)

    def set_machine(flags=(), gpu=False):
        monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(runtime, "gpu_present", lambda: gpu)

    return set_machine


@pytest.mark.parametrize("flags", [("avx512_bf16",), ("amx_bf16", "amx_tile"),
                                   ("avx2", "avx512_bf16", "amx_bf16")])
def test_auto_is_mixed_bfloat16_on_a_cpu_with_bfloat16_hardware(machine, flags):
    machine(("fpu", "avx2", *flags))
    assert runtime.resolve_precision("auto") == "mixed_bfloat16"
    assert "natively" in runtime.describe_precision("auto")


def test_auto_is_float32_without_bfloat16_hardware_or_with_a_gpu(machine):
    machine(("fpu", "avx2", "avx512f", "avx512_fp16"))  # fp16 is not bf16
    assert runtime.resolve_precision("auto") == "float32"
    machine(("avx512_bf16", "amx_bf16"), gpu=True)  # not measured on GPUs: float32
    assert runtime.resolve_precision("auto") == "float32"
    assert "GPU" in runtime.describe_precision("auto")


def test_explicit_settings_pass_through_and_empty_is_float32(machine, monkeypatch):
    machine(("avx512_bf16",))
    monkeypatch.setenv(runtime.PRECISION_ENV, "mixed_bfloat16")  # only "auto" reads it
    for setting in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert runtime.resolve_precision(setting) == setting
    assert runtime.resolve_precision("") == "float32"
    assert config_lib.fixed_precision("") == "float32"
    assert config_lib.fixed_precision("auto") is None


def test_the_environment_overrides_auto_and_is_checked(machine, monkeypatch):
    machine(("avx512_bf16",))
    monkeypatch.setenv(runtime.PRECISION_ENV, "float32")
    assert runtime.resolve_precision("auto") == "float32"
    assert runtime.PRECISION_ENV in runtime.describe_precision("auto")
    monkeypatch.setenv(runtime.PRECISION_ENV, "bf16")
    with pytest.raises(ConfigError, match=r"\$CSKD_PRECISION='bf16' is not one of") as info:
        runtime.resolve_precision("auto")
    assert "\n" not in str(info.value)


def test_cpu_flags_reads_proc_cpuinfo():
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo (not Linux)")
    text = open("/proc/cpuinfo").read()
    assert ("avx512_bf16" in text) == ("avx512_bf16" in runtime.cpu_flags())


def test_auto_is_the_default_and_bad_values_are_config_errors():
    # auto by evidence: bf16's paired accuracy within seed noise (benchmarks/README.md, 3.6).
    config = config_lib.default_config()
    assert config.mixed_precision == "auto"
    # The suite pins "auto" to float32 (tests/conftest.py), so float32 numerics stay float32.
    assert os.environ[runtime.PRECISION_ENV] == "float32"
    assert runtime.resolve_precision(config.mixed_precision) == "float32"
    for good in ("auto", "float32", "mixed_bfloat16", "mixed_float16", ""):
        config.mixed_precision = good
        config_lib.validate(config)
    config.mixed_precision = "bfloat16"
    with pytest.raises(ConfigError, match=r"config.mixed_precision='bfloat16' is not one of"):
        config_lib.validate(config)


def test_a_config_json_from_before_the_field_reads_as_float32():
    fields = json.loads(config_lib.to_json(config_lib.default_config()))
    del fields["mixed_precision"]
    assert config_lib.from_json(json.dumps(fields)).mixed_precision == ""
    config = config_lib.default_config()
    config.mixed_precision = "auto"
    assert config_lib.from_json(config_lib.to_json(config)).mixed_precision == "auto"


def test_mixed_float16_without_a_gpu_is_a_config_error(machine):
    machine(("avx512_bf16",))
    config = config_lib.default_config()
    config.mixed_precision = "mixed_float16"
    with pytest.raises(ConfigError, match="needs a GPU"):
        runtime.setup(config)


# ------------------------------------------------------------ float32 where it matters
def tiny_model(method, num_classes=5):
    from cskd_tf.training import fit_setup

    config = config_lib.default_config()
    config.update(dict(method=method, model="preact_resnet18", model_width=4))
    return config, fit_setup.build_model(config, num_classes, (8, 8, 1), (0.5,), (0.5,))


def bf16_teacher(num_classes):
    """A frozen tiny network, itself computing in bfloat16, as the KD teacher."""
    from cskd_tf.training import teacher as teacher_lib

    _, net = tiny_model("ce", num_classes)
    return teacher_lib.Teacher(lambda x: net.forward(x)["logits"], num_classes, keep=net)


# Every method, as the registry declares them (read without importing TensorFlow here).
METHODS = registry.METHODS.names(declared=True)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_step_under_mixed_bfloat16_is_float32_and_finite(name):
    from cskd_tf import losses

    assert METHODS == losses.METHODS.names()
    keras.config.set_dtype_policy("mixed_bfloat16")  # the conftest fixture resets it
    _, model = tiny_model(name)
    assert model.backbone.get_layer("stage2").compute_dtype == "bfloat16"
    method = model.method
    if method.needs_teacher:
        method.prepare_training(model, teacher=bf16_teacher(5))
    images = tuple(tf.random.uniform((8, 8, 8, 1), seed=s) for s in range(len(method.views)))
    labels = tf.constant(LABELS)
    with tf.GradientTape() as tape:
        outputs, detached = method.passes(model, images, labels, tape)
        total, terms = method.loss(model, labels, outputs, detached, model.supervised)
        logits = outputs["logits"]
    assert logits.dtype == tf.float32 and total.dtype == tf.float32
    assert np.all(np.isfinite(logits.numpy())) and np.isfinite(float(total))
    for term, value in terms.items():
        assert value.dtype == tf.float32 and np.isfinite(float(value)), term
    for value in detached.values():  # partner / teacher logits enter the KL as float32
        if isinstance(value, tf.Tensor) and value.dtype.is_floating and value.shape.rank == 2:
            assert value.dtype == tf.float32
    gradients = [g for g in tape.gradient(total, model.trainable_variables) if g is not None]
    assert gradients and all(g.dtype == tf.float32 for g in gradients)
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients)


def test_cskd_train_step_under_mixed_bfloat16():
    """CSKDModel.train_step as fit runs it: float32 variables, finite float32 logs."""
    from cskd_tf.training import fit_setup

    keras.config.set_dtype_policy("mixed_bfloat16")
    config, model = tiny_model("cskd")
    fit_setup.compile_model(model, config, steps=1, jit_compile=False)
    before = [v.numpy().copy() for v in model.trainable_variables]
    images = (tf.random.uniform((8, 8, 8, 1), seed=1), tf.random.uniform((8, 8, 8, 1), seed=2))
    logs = model.train_step((images, tf.constant(LABELS)))
    for name in ("loss", "ce", "cls", "accuracy"):
        assert logs[name].dtype == tf.float32 and np.isfinite(float(logs[name])), name
    assert all(v.dtype == "float32" for v in model.variables)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    assert model(images[0]).dtype == tf.float32


def test_batch_norm_statistics_are_float32_under_mixed_bfloat16():
    """Keras upcasts BN's input to float32 before the moments (batch_normalization.py:
    "BN is prone to overflow with float16/bfloat16 inputs"). Inputs near 1000 with unit
    spread: bfloat16 (8-bit mantissa) arithmetic would put the mean off by ~1 and the
    variance by far more; float32 moments of the same bfloat16 inputs are exact to ~1e-5."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = keras.layers.BatchNormalization(momentum=0.0, epsilon=1e-5)
    x = tf.cast(1000.0 + tf.random.normal((256, 4), seed=3) * 4.0, tf.bfloat16)
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
    exact = x.numpy().astype(np.float64)
    np.testing.assert_allclose(layer.moving_mean.numpy(), exact.mean(0), rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), exact.var(0), rtol=1e-3)


# ------------------------------------------------------------------------------ the record
def fake_run(path, mixed_precision, recorded=None):
    """A workdir as cskd-train leaves it before the first checkpoint."""
    from cskd_tf.runs import Workdir

    config = config_lib.default_config()
    config.mixed_precision = mixed_precision
    workdir = Workdir(str(path))
    workdir.prepare_for_training(config)
    facts = {"num_classes": 10}
    if recorded:
        facts["runtime"] = {"precision": recorded}
    workdir.write("data.json", facts)
    workdir.unlock()
    return config


def test_resuming_under_another_precision_is_refused(tmp_path):
    from cskd_tf.runs import Workdir

    config = fake_run(tmp_path / "bf16", "auto", recorded="mixed_bfloat16")
    Workdir(str(tmp_path / "bf16")).prepare_for_training(config, precision="mixed_bfloat16")
    config.mixed_precision = "mixed_bfloat16"  # the same policy, named explicitly: resumes
    Workdir(str(tmp_path / "bf16")).prepare_for_training(config, precision="mixed_bfloat16")
    with pytest.raises(WorkdirError, match=r"trained under mixed_bfloat16 but this run would "
                       r"continue under float32.*--config.mixed_precision=mixed_bfloat16"):
        Workdir(str(tmp_path / "bf16")).prepare_for_training(config, precision="float32")
    # A run from before the record, with the float32 default of then ("").
    config = fake_run(tmp_path / "old", "")
    config.mixed_precision = "auto"
    with pytest.raises(WorkdirError, match="--config.mixed_precision=float32"):
        Workdir(str(tmp_path / "old")).prepare_for_training(config, precision="mixed_bfloat16")
    config.mixed_precision = "float32"
    Workdir(str(tmp_path / "old")).prepare_for_training(config, precision="float32")


def test_report_never_averages_runs_of_different_precision(tmp_path):
    from cskd_tf.evaluation import report

    metrics = {"test": {"top1_error": 10.0, "top5_error": 1.0, "ece": 1.0, "recall_at_1": 90.0}}
    for name, setting, recorded in (("f32_new", "auto", "float32"), ("f32_old", "", None),
                                    ("bf16_a", "auto", "mixed_bfloat16"),
                                    ("bf16_b", "mixed_bfloat16", "mixed_bfloat16"),
                                    ("pending", "auto", None)):
        fake_run(tmp_path / name, setting, recorded)
        if name != "pending":
            (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    runs = [report.load_run(p) for p in report.find_run_dirs([str(tmp_path)])]
    groups = report.group_runs(runs)
    models = {key[1]: len(group.runs) for key, group in groups.items()}
    assert models == {"preact_resnet18": 2, "preact_resnet18 (mixed_bfloat16)": 2,
                      "preact_resnet18 (auto)": 1}
    text = report.build_report([str(tmp_path)])
    assert "Table 1 (preact_resnet18 (mixed_bfloat16))" in text
    assert "differ in config field" not in text  # the setting itself is free


# ------------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.cli
def test_cskd_train_by_default_runs_auto_records_it_and_reloads(tmp_path, monkeypatch):
    from cskd_tf.evaluation import report
    from cskd_tf.training.restore import restore_from_workdir

    env = {k: v for k, v in os.environ.items() if k != runtime.PRECISION_ENV}
    expected = ("mixed_bfloat16" if runtime.native_bf16_flags() and not runtime.gpu_present()
                else "float32")
    workdir = tmp_path / "run"
    result = subprocess.run(
        [console_script("cskd-train"),
         f"--config={os.path.join(ROOT, 'configs', 'digits_quick.py')}",
         f"--workdir={workdir}", "--config.model_width=8", "--config.max_classes=5",
         "--config.max_train_per_class=8", "--config.batch_size=20", "--config.num_epochs=1",
         "--config.eval_splits=('val',)"],  # no precision given: the default, auto
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Precision: ") == 1
    assert f"Precision: {expected} (auto: " in result.stdout
    assert json.load(open(workdir / "config.json"))["mixed_precision"] == "auto"
    # The single-process default: TensorFlow's default strategy, one replica, one worker.
    assert ("Distribution: one_device (TensorFlow's default strategy), 1 replica in sync, "
            "1 worker (this process)") in result.stdout
    assert json.load(open(workdir / "data.json"))["runtime"] == {
        "precision": expected,
        "distribution": {"kind": "one_device", "strategy": "default", "replicas": 1,
                         "workers": 1, "worker_index": 0, "chief": True, "task_type": None,
                         "task_index": None}}
    # Reloading applies the recorded policy, whatever "auto" would say now.
    other = "float32" if expected == "mixed_bfloat16" else "mixed_bfloat16"
    monkeypatch.setenv(runtime.PRECISION_ENV, other)
    _, _, model = restore_from_workdir(str(workdir / "model.keras"), need_finished=True)
    assert runtime.precision() == expected
    assert model.backbone.get_layer("stage2").compute_dtype == expected.replace("mixed_", "")
    images = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    logits = model.predict(images, verbose=0)
    assert logits.dtype == np.float32 and logits.shape == (3, 5)
    assert np.all(np.isfinite(logits))
    [run] = [report.load_run(str(workdir))]
    assert run.precision == expected
    # The export's self-check (reloaded SavedModel vs the traced Keras model) holds.
    from cskd_tf.serving.export import export_workdir

    export = export_workdir(str(workdir), "digits", export_base=str(tmp_path / "sm"), verbose=0)
    serve = tf.saved_model.load(export.path).signatures["serving_default"]
    served = serve(images=tf.constant((images * 255).astype(np.uint8)))
    assert served["logits"].dtype == tf.float32 and served["probabilities"].dtype == tf.float32

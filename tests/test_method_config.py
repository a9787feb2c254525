"""Method hyperparameters: per-method config groups, from_experiment_config, Keras' get_config /
from_config pair, the shared range check, and the deprecated flat field names
(cskd_tf/config.py)."""

import inspect
import json
import os

import pytest

from cskd_tf import config as config_lib
from cskd_tf import losses
from cskd_tf.config import DEPRECATED_FIELDS, check_range, default_config, validate
from cskd_tf.errors import ConfigError

ROOT = os.path.join(os.path.dirname(__file__), "..")

# What each method's get_config() must say when built from default_config(): the group it
# reads (combinations: their parts' fields, flat) plus the shared fields (T, λ as `weight`).
KD_DEFAULTS = {"temperature": 4.0, "alpha": 0.9, "teacher_workdir": "", "teacher_model": ""}
FROM_DEFAULTS = {
    "ce": {},
    "adacos": {},
    "virtual_softmax": {},
    "cskd": {"temperature": 4.0, "weight": 1.0},
    "cskd_e": {"temperature": 4.0, "weight": 1.0, "lambda_sample": 1.0},
    "label_smoothing": {"epsilon": 0.1},
    "max_entropy": {"beta": 0.1},
    "mixup": {"alpha": 1.0, "seed": 0},
    "mixup_cskd": {"temperature": 4.0, "weight": 1.0, "alpha": 1.0, "seed": 0},
    "kd": KD_DEFAULTS,
    "kd_cskd": {"temperature": 4.0, "weight": 1.0, "kd_temperature": 4.0, "alpha": 0.9,
                "teacher_workdir": "", "teacher_model": ""},
    "byot": {"temperature": 3.0, "alpha": 0.1, "beta": 1e-6},
    "ddgsd": {"mmd_weight": 0.0005, "temperature": 3.0},
}
CLASS_NAMES = {"ce": "CrossEntropy", "adacos": "AdaCos", "virtual_softmax": "VirtualSoftmax",
               "cskd": "CSKD", "cskd_e": "CSKDE", "label_smoothing": "LabelSmoothing",
               "max_entropy": "MaxEntropy", "mixup": "Mixup", "mixup_cskd": "MixupCSKD",
               "kd": "KD", "kd_cskd": "KDCSKD", "byot": "BYOT", "ddgsd": "DDGSD"}


def test_every_registered_method_is_listed_here():
    assert set(FROM_DEFAULTS) == set(losses.METHODS) == set(CLASS_NAMES)


@pytest.mark.parametrize("name", sorted(FROM_DEFAULTS))
def test_method_builds_from_default_config_and_round_trips_get_config(name):
    import keras

    cls = losses.METHODS[name]
    assert getattr(losses, CLASS_NAMES[name]) is cls  # exported under its CamelCase name
    method = losses.get_method(name, default_config())
    assert type(method) is cls and method.name == name
    config = method.get_config()
    assert config == FROM_DEFAULTS[name]
    json.dumps(config)  # plain values only
    # Keras' pair: from_config inverts get_config, and the class is a registered serializable.
    assert cls.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert type(restored) is cls and restored.get_config() == config
    # The paper's defaults are the constructor's defaults (the seed aside: None = random).
    defaults = {k: v for k, v in config.items() if k != "seed"}
    assert {k: v for k, v in cls().get_config().items() if k != "seed"} == defaults
    assert losses.get(name).get_config().items() >= defaults.items()
    # The constructor takes named hyperparameters, never the experiment config.
    assert "config" not in inspect.signature(cls.__init__).parameters


def test_from_experiment_config_reads_the_method_groups_and_the_shared_fields():
    config = default_config()
    config.temperature = 2.0
    config.lambda_cls = 3.0
    config.seed = 7
    config.kd.update(dict(temperature=5.0, alpha=0.25, teacher_workdir="t", teacher_model="m"))
    config.mixup.alpha = 0.2
    config.cskd_e.lambda_sample = 0.5
    config.label_smoothing.epsilon = 0.3
    config.max_entropy.beta = 0.4
    config.byot.update(dict(temperature=2.5, alpha=0.3, beta=0.01))
    config.ddgsd.update(dict(mmd_weight=0.1, temperature=1.5))
    kd = {"temperature": 5.0, "alpha": 0.25, "teacher_workdir": "t", "teacher_model": "m"}
    want = {
        "cskd": {"temperature": 2.0, "weight": 3.0},
        "cskd_e": {"temperature": 2.0, "weight": 3.0, "lambda_sample": 0.5},
        "label_smoothing": {"epsilon": 0.3},
        "max_entropy": {"beta": 0.4},
        "mixup": {"alpha": 0.2, "seed": 7},
        "mixup_cskd": {"temperature": 2.0, "weight": 3.0, "alpha": 0.2, "seed": 7},
        "kd": kd,
        "kd_cskd": {"temperature": 2.0, "weight": 3.0, "kd_temperature": 5.0, "alpha": 0.25,
                    "teacher_workdir": "t", "teacher_model": "m"},
        "byot": {"temperature": 2.5, "alpha": 0.3, "beta": 0.01},
        "ddgsd": {"mmd_weight": 0.1, "temperature": 1.5},
    }
    for name, hyperparameters in want.items():
        method = losses.METHODS[name].from_experiment_config(config)
        assert method.get_config() == hyperparameters
        assert losses.get_method(name, config).get_config() == hyperparameters


@pytest.mark.parametrize("name, group, bad, message", [
    ("label_smoothing", dict(label_smoothing=dict(epsilon=1.0)), 1.0,
     r"config.label_smoothing.epsilon must be in \[0, 1\) \(got 1.0\)"),
    ("max_entropy", dict(max_entropy=dict(beta=-0.1)), -0.1, "config.max_entropy.beta must be >= 0"),
    ("mixup", dict(mixup=dict(alpha=0.0)), 0.0, "config.mixup.alpha must be > 0"),
    ("mixup_cskd", dict(mixup=dict(alpha=-1.0)), -1.0, "config.mixup.alpha must be > 0"),
    ("kd", dict(kd=dict(alpha=1.5)), 1.5, r"config.kd.alpha must be in \[0, 1\]"),
    ("kd_cskd", dict(kd=dict(temperature=0.0)), 0.0, "config.kd.temperature must be > 0"),
    ("cskd_e", dict(cskd_e=dict(lambda_sample=-1.0)), -1.0,
     "config.cskd_e.lambda_sample must be >= 0"),
    ("byot", dict(byot=dict(alpha=2.0)), 2.0, r"config.byot.alpha must be in \[0, 1\]"),
    ("ddgsd", dict(ddgsd=dict(mmd_weight=-1.0)), -1.0, "config.ddgsd.mmd_weight must be >= 0"),
])
def test_each_method_checks_its_hyperparameters_with_the_shared_helper(name, group, bad, message):
    config = default_config()
    config.update(group)
    with pytest.raises(ConfigError, match=message) as info:
        losses.get_method(name, config)
    field = message.split(" must")[0]
    assert f"set --{field} to a value" in str(info.value)  # the message says how to fix it


def test_check_range_bounds_and_message():
    assert check_range("x", 0, low=0) == 0.0
    assert check_range("x", "0.5", low=0, high=1, high_open=True) == 0.5
    assert check_range("x", 1, low=0, high=1) == 1.0
    with pytest.raises(ConfigError, match=r"^config.x must be > 0 \(got 0\); set --config.x to a "
                                          r"value > 0$"):
        check_range("x", 0, low=0, low_open=True)
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\) \(got 1\)"):
        check_range("x", 1, low=0, high=1, high_open=True)
    with pytest.raises(ConfigError, match=r"must be <= 2 .*\(the default is 1\)$"):
        check_range("x", 3, high=2, default=1)
    for not_a_number in (float("nan"), "abc", None):
        with pytest.raises(ConfigError, match="config.x must be >= 0"):
            check_range("x", not_a_number, low=0)
    # validate() uses the same helper for the top-level fields.
    config = default_config()
    config.val_fraction = 1.0
    with pytest.raises(ConfigError, match=r"config.val_fraction must be in \[0, 1\)"):
        validate(config)


def test_dead_fields_are_gone():
    config = default_config()
    assert "optimizer" not in config and "optimizer" not in config_lib.CHOICES
    for old in DEPRECATED_FIELDS:
        assert old not in config or old == "label_smoothing"  # now the group of that name
    assert not hasattr(losses.Method, "forward_passes") and not hasattr(losses.Method, "targets")


# ------------------------------------------------------------------ deprecated flat names
def new_value(old):
    """A value for the deprecated field that differs from its new field's default."""
    group, field = DEPRECATED_FIELDS[old].split(".")
    default = default_config()[group][field]
    return "some/path" if isinstance(default, str) else default / 2


@pytest.mark.parametrize("old", sorted(set(DEPRECATED_FIELDS) - {"label_smoothing"}))
def test_a_flat_field_set_in_a_config_file_moves_to_its_group_with_one_warning(old, capsys):
    config = default_config()  # what a config file's get_config() does
    setattr(config, old, new_value(old))
    validate(config)
    group, field = DEPRECATED_FIELDS[old].split(".")
    assert config[group][field] == new_value(old)
    assert old not in config
    err = capsys.readouterr().err
    assert err == f"warning: config.{old} is deprecated; use config.{group}.{field}\n"
    validate(config)  # moved once: no second warning
    assert capsys.readouterr().err == ""


def test_setting_both_the_flat_and_the_new_name_is_an_error():
    config = default_config()
    config.kd.temperature = 3.0
    config.kd_temperature = 2.0
    with pytest.raises(ConfigError, match="config.kd_temperature .deprecated. and "
                                          "config.kd.temperature are both set"):
        validate(config)


def test_flat_flags_are_renamed_before_the_config_flags_parse_them(capsys):
    from absl import flags
    from ml_collections import config_flags

    argv = ["prog", f"--config={os.path.join(ROOT, 'configs', 'digits_quick.py')}",
            "--config.kd_temperature=2", "--config.label_smoothing", "0.3",
            "--config.kd.alpha=0.5", "--config.lambda_cls=2"]
    upgraded = config_lib.upgrade_flag_args(argv)
    assert upgraded[2:] == ["--config.kd.temperature=2", "--config.label_smoothing.epsilon",
                            "0.3", "--config.kd.alpha=0.5", "--config.lambda_cls=2"]
    assert capsys.readouterr().err.splitlines() == [
        "warning: config.kd_temperature is deprecated; use config.kd.temperature",
        "warning: config.label_smoothing is deprecated; use config.label_smoothing.epsilon"]
    # config_flags find the overrides in sys.argv; cli/common.py puts the upgraded argv there.
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=upgraded)
    values(upgraded)
    config = validate(values.config)
    assert (config.kd.temperature, config.kd.alpha, config.label_smoothing.epsilon,
            config.lambda_cls) == (2.0, 0.5, 0.3, 2.0)
    with pytest.raises(AttributeError):  # what the CLI reported as "unknown config field"
        fresh = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "", flag_values=fresh, sys_argv=argv[:3])
        fresh(argv[:3])


def test_a_run_written_with_flat_fields_loads_into_the_groups_silently(capsys):
    old = json.loads(config_lib.to_json(default_config()))
    for name in ("label_smoothing", "max_entropy", "mixup", "kd", "byot", "ddgsd", "cskd_e"):
        del old[name]
    old.update(label_smoothing=0.2, kd_temperature=3.0, kd_alpha=0.5, teacher_workdir="t",
               teacher_model="", byot_beta=1e-5, lambda_sample=0.25, optimizer="sgd")
    config = validate(config_lib.from_json(json.dumps(old)))
    assert capsys.readouterr().err == ""
    assert config.label_smoothing.epsilon == 0.2
    assert config.kd.to_dict() == dict(temperature=3.0, alpha=0.5, teacher_workdir="t",
                                       teacher_model="")
    assert (config.byot.beta, config.byot.alpha, config.cskd_e.lambda_sample) == (1e-5, 0.1, 0.25)
    assert "optimizer" not in config


def test_the_removed_optimizer_field_is_dropped_if_sgd_and_refused_otherwise(capsys):
    config = default_config()
    config.optimizer = "sgd"
    validate(config)
    assert "optimizer" not in config
    assert "config.optimizer is deprecated and ignored" in capsys.readouterr().err
    config.optimizer = "adam"
    with pytest.raises(ConfigError, match="config.optimizer='adam' is not supported"):
        validate(config)


def test_an_overrides_file_may_use_flat_names_and_groups(tmp_path, capsys):
    from cskd_tf.cli.common import load_config

    path = tmp_path / "best.json"
    path.write_text(json.dumps({"kd_alpha": 0.3, "mixup": {"alpha": 0.4}, "lambda_cls": 2.0}))
    config = load_config(default_config(), str(path))
    assert (config.kd.alpha, config.kd.temperature, config.mixup.alpha, config.lambda_cls) == (
        0.3, 4.0, 0.4, 2.0)
    assert "config.kd_alpha is deprecated; use config.kd.alpha" in capsys.readouterr().err


def test_a_report_does_not_flag_old_and_new_runs_of_one_experiment_as_different(tmp_path):
    from cskd_tf.evaluation import report

    def write_run(name, config):
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        metrics = {"top1_error": 20.0, "top5_error": 5.0, "ece": 3.0, "recall_at_1": 80.0,
                   "nll": 1.0, "num_examples": 100}
        (path / "metrics.json").write_text(json.dumps({"test": metrics}))

    new = json.loads(config_lib.to_json(default_config()))
    new.update(method="kd", seed=0)
    old = {k: v for k, v in new.items() if k != "kd"}
    old.update(seed=1, optimizer="sgd", kd_temperature=4.0, kd_alpha=0.9, teacher_workdir="",
               teacher_model="")
    write_run("new", new)
    write_run("old", old)
    assert "differ" not in report.build_report([str(tmp_path)])
    old.update(seed=2, kd_alpha=0.5)  # a real difference is still reported, under its group
    write_run("old_other_alpha", old)
    assert "differ in config field(s) kd " in report.build_report([str(tmp_path)])


def test_cli_maps_flat_fields_of_a_config_file_and_names_the_label_smoothing_group(tmp_path):
    """One cskd-train start-up (it stops at the first error, before any data is read)."""
    import subprocess

    from conftest import console_script

    config_file = tmp_path / "old.py"
    config_file.write_text("from cskd_tf.config import default_config\n\n\n"
                           "def get_config():\n    c = default_config()\n"
                           "    c.method = 'mixup'\n    c.mixup_alpha = 0.0\n    return c\n")
    smoothing_file = tmp_path / "old_smoothing.py"
    smoothing_file.write_text("from cskd_tf.config import default_config\n\n\n"
                              "def get_config():\n    c = default_config()\n"
                              "    c.label_smoothing = 0.2\n    return c\n")
    for config, want in [
        (config_file, ["warning: config.mixup_alpha is deprecated; use config.mixup.alpha",
                       "error: config.mixup.alpha must be > 0 (got 0.0); set --config.mixup.alpha "
                       "to a value > 0"]),
        (smoothing_file, ["error: config.label_smoothing is now a group of fields; set "
                          "config.label_smoothing.epsilon instead"]),
    ]:
        result = subprocess.run([console_script("cskd-train"), f"--config={config}",
                                 f"--workdir={tmp_path / 'run'}"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == want, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()

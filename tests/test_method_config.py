"""Method hyperparameters: per-method config groups, from_experiment_config, Keras' get_config /
from_config pair and the shared range check
(cskd_tf/config.py)."""

import inspect
import json
import os

import pytest

from cskd_tf import config as config_lib
from cskd_tf import losses
from cskd_tf.config import check_range, default_config, validate
from cskd_tf.errors import ConfigError

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_the_exported_method_classes_are_the_registered_ones():
    classes = [getattr(losses, n) for n in losses.__all__]
    classes = [c for c in classes if isinstance(c, type) and issubclass(c, losses.Method)
               and c is not losses.Method and "name" in vars(c)]
    assert len(classes) >= 13  # the paper's tables
    for cls in classes:
        assert losses.METHODS[cls.name] is cls


def check_method_config(name):
    """What every method must do with its config: build from default_config() with its
    constructor's (the paper's) defaults, round-trip Keras' get_config/from_config, and
    declare its group (if any) in @register so that default_config() holds it."""
    import keras

    cls = losses.METHODS[name]
    method = losses.get_method(name, default_config())
    assert type(method) is cls and method.name == name
    config = method.get_config()
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
    # Its config group: what it declares, read the same from the source (no import) as from
    # the registered class, with the constructor's defaults.
    entry = losses.METHODS.get(name)
    declared = losses.METHODS.declared()[name]
    assert (declared.display_name, declared.defaults) == (entry.display_name, entry.defaults)
    if entry.defaults:
        assert default_config()[name].to_dict() == entry.defaults
        # A None default is resolved by the method (BYOT's α and β: its variant's values).
        assert config.items() >= {k: v for k, v in entry.defaults.items()
                                  if v is not None}.items()
    else:
        assert name not in default_config()


@pytest.mark.parametrize("name", losses.METHODS.names())
def test_method_builds_from_default_config_and_round_trips_get_config(name):
    check_method_config(name)


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
    config.ddgsd.update(dict(mmd_weight=0.1, temperature=1.5, kl_weight=0.25))
    config.adacos.eval_scale = "unit"
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
        "byot": {"temperature": 2.5, "alpha": 0.3, "beta": 0.01, "variant": "iccv2019"},
        "ddgsd": {"mmd_weight": 0.1, "temperature": 1.5, "kl_weight": 0.25},
        "adacos": {"eval_scale": "unit"},
    }
    for name, hyperparameters in want.items():
        method = losses.METHODS[name].from_experiment_config(config)
        assert method.get_config() == hyperparameters
        assert losses.get_method(name, config).get_config() == hyperparameters


@pytest.mark.parametrize("name, group, bad, message", [
    ("label_smoothing", dict(label_smoothing=dict(epsilon=1.0)), 1.0,
     r"config.label_smoothing.epsilon must be in \[0, 1\) \(got 1.0\)"),
    ("max_entropy", dict(max_entropy=dict(beta=-0.1)), -0.1,
     "config.max_entropy.beta must be >= 0"),
    ("mixup", dict(mixup=dict(alpha=0.0)), 0.0, "config.mixup.alpha must be > 0"),
    ("mixup_cskd", dict(mixup=dict(alpha=-1.0)), -1.0, "config.mixup.alpha must be > 0"),
    ("kd", dict(kd=dict(alpha=1.5)), 1.5, r"config.kd.alpha must be in \[0, 1\]"),
    ("kd_cskd", dict(kd=dict(temperature=0.0)), 0.0, "config.kd.temperature must be > 0"),
    ("cskd_e", dict(cskd_e=dict(lambda_sample=-1.0)), -1.0,
     "config.cskd_e.lambda_sample must be >= 0"),
    ("byot", dict(byot=dict(alpha=2.0)), 2.0, r"config.byot.alpha must be in \[0, 1\]"),
    ("ddgsd", dict(ddgsd=dict(mmd_weight=-1.0)), -1.0, "config.ddgsd.mmd_weight must be >= 0"),
    ("ddgsd", dict(ddgsd=dict(kl_weight=-1.0)), -1.0, "config.ddgsd.kl_weight must be >= 0"),
    ("byot", dict(byot=dict(variant="official", beta=-1.0)), -1.0,
     "config.byot.beta must be >= 0"),
])
def test_each_method_checks_its_hyperparameters_with_the_shared_helper(name, group, bad, message):
    config = default_config()
    config.update(group)
    with pytest.raises(ConfigError, match=message) as info:
        losses.get_method(name, config)
    field = message.split(" must")[0]
    assert f"set --{field} to a value" in str(info.value)  # the message says how to fix it


@pytest.mark.parametrize("name, field, bad", [
    ("byot", "variant", "journal"), ("adacos", "eval_scale", "cosine")])
def test_choice_hyperparameters_reject_unknown_values_in_one_line(name, field, bad):
    config = default_config()
    config[name][field] = bad
    with pytest.raises(ConfigError) as info:
        losses.get_method(name, config)
    message = str(info.value)
    assert "\n" not in message and f"config.{name}.{field}={bad!r} is not one of" in message
    assert f"set --config.{name}.{field} to one of them" in message


def test_byot_alpha_and_beta_default_to_the_variants_values_and_round_trip():
    config = default_config()
    assert (config.byot.alpha, config.byot.beta, config.byot.variant) == (None, None, "iccv2019")
    config.byot.variant = "official"
    official = losses.get_method("byot", config)
    assert (official.alpha, official.beta) == (0.3, 0.03)
    config.byot.alpha = 0.5  # a set value wins over the variant's
    assert losses.get_method("byot", config).get_config() == {
        "temperature": 3.0, "alpha": 0.5, "beta": 0.03, "variant": "official"}
    for method in (official, losses.BYOT(variant="official", beta=0.1)):
        assert type(method).from_config(method.get_config()).get_config() == method.get_config()
    # The config (with unset fields) survives the workdir's JSON round trip.
    assert config_lib.from_json(config_lib.to_json(default_config())).byot.alpha is None


def test_new_method_options_are_reachable_from_the_command_line():
    import subprocess
    import sys

    # The --config flag as cskd-train defines it, parsed in a fresh process (absl's global flags).
    script = ("from absl import app, flags\n"
              "from ml_collections import config_flags\n"
              "from cskd_tf.config import to_json\n"
              "config_flags.DEFINE_config_file('config', None, '', lock_config=True)\n"
              "app.run(lambda argv: print(to_json(flags.FLAGS.config)))\n")
    proc = subprocess.run(
        [sys.executable, "-c", script,
         f"--config={os.path.join(ROOT, 'configs', 'digits_quick.py')}",
         "--config.byot.variant=official", "--config.byot.alpha=0.25",
         "--config.ddgsd.kl_weight=0.5", "--config.adacos.eval_scale=unit"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, check=True)
    config = validate(config_lib.from_json(proc.stdout))
    assert losses.get_method("byot", config).get_config() == {
        "temperature": 3.0, "alpha": 0.25, "beta": 0.03, "variant": "official"}
    assert losses.get_method("ddgsd", config).kl_weight == 0.5
    assert losses.get_method("adacos", config).eval_scale == "unit"


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
    config.optimizer = "sgd"  # a field of an early draft: now just unknown
    with pytest.raises(ConfigError, match="unknown config field 'optimizer'"):
        validate(config)
    assert not hasattr(losses.Method, "forward_passes") and not hasattr(losses.Method, "targets")


def test_an_overrides_file_sets_only_the_group_fields_it_names(tmp_path):
    from cskd_tf.cli.common import load_config

    path = tmp_path / "best.json"
    path.write_text(json.dumps({"mixup": {"alpha": 0.4}, "lambda_cls": 2.0}))
    config = load_config(default_config(), str(path))
    assert (config.kd.temperature, config.mixup.alpha, config.lambda_cls) == (4.0, 0.4, 2.0)
    path.write_text(json.dumps({"kd_alpha": 0.3}))  # a flat name is just an unknown field
    with pytest.raises(ConfigError, match="unknown config fields: kd_alpha"):
        load_config(default_config(), str(path))

"""cskd_tf/compat.py: the private Keras / Keras Tuner surface it relies on, and that
nothing else relies on any.

A failure here after upgrading keras or keras-tuner names what moved; fix it in
cskd_tf/compat.py (and the pins in pyproject.toml), not at the call sites.
"""

import ast
import importlib
import inspect
import os

import pytest

from cskd_tf import compat

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cskd_tf")
PRIVATE_MODULES = ("keras.src", "keras_tuner.src")
# Private attributes of Keras / Keras Tuner objects cskd_tf once used directly.
PRIVATE_NAMES = {"_learning_rate", "_retry_queue", "_collective_all_reduce_multi_worker",
                 "_flatten_layers", "_get_trial_dir", "_populate_initial_space",
                 "_set_project_dir", "_try_run_and_update_trial", "_maybe_symbolic_build",
                 "_symbolic_build", "_loss_tracker", "_direction", "_compile_metrics",
                 "_distribute_strategy", "_compile_loss"}
# Private names allowed outside compat.py: none (CSKDModel's symbolic-build override lives in
# compat.PrebuiltSymbolicBuild).
KNOWN_ELSEWHERE: set = set()


def _moved(library, what):
    import keras
    import keras_tuner

    version = {"keras": keras.__version__, "keras_tuner": keras_tuner.__version__}[library]
    return (f"{library} {version} moved or changed {what}; update cskd_tf/compat.py "
            "(and the version pins in pyproject.toml)")


def _private_symbol(pair, library):
    module_name, attribute = pair
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        pytest.fail(_moved(library, f"the module {module_name}"))
    assert hasattr(module, attribute), _moved(library, f"{module_name}.{attribute}")
    return module, getattr(module, attribute)


# ------------------------------------------------------------------- keras private
def test_keras_multi_worker_test_exists_and_is_what_keras_reduces_with():
    import tensorflow as tf

    module, function = _private_symbol(compat.KERAS_PRIVATE, "keras")
    assert list(inspect.signature(function).parameters) == ["strategy"], \
        _moved("keras", f"the signature of {compat.KERAS_PRIVATE[1]}")
    # Keras decides how to reduce step outputs across workers with it; if reduce_per_replica
    # stops calling it, CSKDModel's one-element-vector workaround follows the wrong test.
    assert compat.KERAS_PRIVATE[1] in inspect.getsource(module.reduce_per_replica), \
        _moved("keras", "reduce_per_replica (it no longer calls "
               f"{compat.KERAS_PRIVATE[1]})")
    assert compat.reduces_step_outputs_across_workers(tf.distribute.get_strategy()) is False
    one_worker = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert compat.reduces_step_outputs_across_workers(one_worker) is False


def test_all_sublayers_reaches_nested_layers():
    import keras

    assert hasattr(keras.layers.Layer, "_flatten_layers"), _moved("keras", "Layer._flatten_layers")
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                              keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2, name="head")])
    names = [layer.name for layer in compat.all_sublayers(outer)]
    assert "outer" not in names and set(names) >= {"inner", "inner_bn", "head"}, names
    assert len(names) == len(set(names))


def test_keras_loss_scaling_tracker_and_metric_groups_are_what_keras_uses():
    import keras
    import tensorflow as tf
    from keras.src.callbacks import monitor_callback
    from keras.src.backend.tensorflow import trainer as tf_trainer

    module, scale = _private_symbol(compat.KERAS_LOSS_SCALING[:2], "keras")
    _private_symbol((compat.KERAS_LOSS_SCALING[0], compat.KERAS_LOSS_SCALING[2]), "keras")
    _private_symbol(compat.KERAS_METRICS_LIST, "keras")
    # Keras' TF train step unscales its loss for the tracker with the same pair.
    assert compat.KERAS_LOSS_SCALING[2] in inspect.getsource(tf_trainer.TensorFlowTrainer), \
        _moved("keras", "the TF train step's loss scaling")
    one = tf.constant(3.0)
    assert float(compat.scale_loss_for_distribution(one)) == 3.0  # one replica: unchanged
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if len(
        tf.config.list_logical_devices("CPU")) > 1 else None
    if two is not None:
        with two.scope():
            assert float(compat.scale_loss_for_distribution(one)) == 1.5
    # The monitor callbacks look into MetricsList groups for `_direction`.
    source = inspect.getsource(monitor_callback.MonitorCallback._set_monitor_op)
    assert "MetricsList" in source and "_direction" in source, \
        _moved("keras", "MonitorCallback's direction inference")
    group = compat.metric_group([compat.declare_direction(keras.metrics.Mean(name="ce"), "down")],
                                name="terms")
    assert group.result() == {"ce": 0.0}
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    assert isinstance(compat.loss_tracker(model), keras.metrics.Mean)
    assert compat.loss_tracker(model).name == "loss"
    assert hasattr(keras.Model, "_maybe_symbolic_build") and hasattr(keras.Model,
                                                                     "_symbolic_build")


# ------------------------------------------------------------- keras tuner private
def test_keras_tuner_debug_flag_is_what_prints_failed_trial_tracebacks(tmp_path, capfd):
    import keras_tuner

    module, value = _private_symbol(compat.KERAS_TUNER_PRIVATE, "keras_tuner")
    assert isinstance(value, bool), _moved("keras_tuner", "config.DEBUG (no longer a bool)")

    class FailingTuner(keras_tuner.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            raise keras_tuner.errors.FailedTrialError("diverged on purpose")

    def search(name):
        oracle = keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective("score", "max"), max_trials=1, seed=1,
            max_retries_per_trial=0, max_consecutive_failed_trials=5)
        tuner = FailingTuner(oracle, hypermodel=lambda hp: hp.Float("x", 0, 1),
                             directory=str(tmp_path), project_name=name)
        tuner.search(verbose=0)
        assert [t.status for t in oracle.trials.values()] == ["FAILED"]
        return capfd.readouterr()

    saved = value
    try:
        setattr(module, compat.KERAS_TUNER_PRIVATE[1], True)
        loud = search("loud")
        compat.quiet_failed_trial_tracebacks()
        assert getattr(module, compat.KERAS_TUNER_PRIVATE[1]) is False
        quiet = search("quiet")
    finally:
        setattr(module, compat.KERAS_TUNER_PRIVATE[1], saved)
    assert "Traceback" in loud.out + loud.err, _moved(
        "keras_tuner", "failed-trial reporting (the traceback this flag silences is gone)")
    assert "Traceback" not in quiet.out + quiet.err, _moved(
        "keras_tuner", "config.DEBUG (it no longer silences failed-trial tracebacks)")


def test_resume_redraws_a_trial_whose_state_was_never_saved(tmp_path):
    """A kill between Keras Tuner writing trial.json and oracle.json: the trial runs later."""
    from cskd_tf.config import default_config
    from cskd_tf.tuning.hypermodel import CSKDHyperModel
    from cskd_tf.tuning.space import SearchSpace
    from cskd_tf.tuning.tuner import CSKDTuner, make_oracle

    space = SearchSpace(default_config())

    def tuner():
        oracle = make_oracle("random", "val_accuracy", "max", max_trials=3, seed=0,
                             failure_limit=3)
        # No TrialData (as on the chief): constructing must not try to build a model.
        return CSKDTuner(oracle, CSKDHyperModel(space), directory=str(tmp_path),
                         project_name="kt")

    first = tuner()
    first.save()
    first.oracle.create_trial("tuner0")
    state_path = os.path.join(first.project_dir, "oracle.json")
    with open(state_path) as f:
        state_before_trial_1 = f.read()
    lost = first.oracle.create_trial("tuner1")
    assert lost.trial_id == "1"
    with open(state_path, "w") as f:  # the kill: trial_1/trial.json written, state not
        f.write(state_before_trial_1)

    second = tuner()
    assert second.oracle.create_trial("tuner0").trial_id == "0"  # Keras Tuner's own retry
    again = second.oracle.create_trial("tuner1")
    assert again.trial_id == "1" and again.status == "RUNNING"
    assert again.hyperparameters.values == lost.hyperparameters.values


# ------------------------------------------------------------------ public routes
def test_learning_rate_logger_reads_the_schedule_through_public_api():
    import keras
    import numpy as np

    from cskd_tf.training.callbacks import LearningRateLogger
    from cskd_tf.training.schedules import EpochSchedule

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    schedule = EpochSchedule(0.1, steps_per_epoch=2, decay_epochs=(1,), total_epochs=2)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                        callbacks=[LearningRateLogger()])
    # The rate of each epoch's last step, not the next epoch's first.
    assert history.history["lr"] == pytest.approx([0.1, 0.01])


# -------------------------------------------------------- compat is the only door
def _python_files():
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                yield os.path.relpath(path, PACKAGE).replace(os.sep, "/"), path


def _private_uses(tree):
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            if any(module == p or module.startswith(p + ".") for p in PRIVATE_MODULES):
                yield node.lineno, f"imports {module}"
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
            yield node.lineno, f"uses .{node.attr}"
        if isinstance(node, ast.FunctionDef) and node.name in PRIVATE_NAMES:
            yield node.lineno, f"overrides {node.name}"
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and str(arg.value).startswith(PRIVATE_MODULES):
                yield node.lineno, f"imports {arg.value}"


def test_only_compat_touches_private_keras_and_keras_tuner():
    offences = []
    for relative, path in _python_files():
        if relative == "compat.py":
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        for line, what in _private_uses(tree):
            if (relative, what.split(".")[-1]) not in KNOWN_ELSEWHERE:
                offences.append(f"cskd_tf/{relative}:{line} {what}")
    assert not offences, ("only cskd_tf/compat.py may use Keras / Keras Tuner private API; "
                          "move these there: " + "; ".join(offences))


def test_the_check_itself_catches_a_private_import():
    tree = ast.parse("from keras.src.backend import x\nimport keras_tuner.src.config\n"
                     "o._retry_queue.append(1)\nimport keras_tuner\n")
    assert [line for line, _ in _private_uses(tree)] == [1, 2, 3]

"""The only place cskd_tf reaches into Keras' or Keras Tuner's private modules.

Everything else uses public API. What is left here has no public route in the
versions pyproject.toml pins (keras 3.15, keras-tuner 1.4.x); tests/test_compat.py
checks each private symbol this module uses, and fails naming this file when an
upgrade moves one. When that happens, update the function here (or delete it,
if the library grew a public way) and the pins in pyproject.toml.

* :func:`reduces_step_outputs_across_workers`: Keras' own test of whether a train
  step's outputs are reduced across workers (``keras.src.backend.tensorflow.
  trainer._collective_all_reduce_multi_worker``), which CSKDModel must match to
  return step outputs Keras can reduce;
* :func:`all_sublayers`: every layer nested in a model, at any depth (Keras'
  ``Layer._flatten_layers``; the public ``model.layers`` is the top level only);
* :func:`scale_loss_for_distribution` / :func:`unscale_loss_for_distribution`: Keras'
  own scaling of a per-replica mean loss by 1/R under ``tf.distribute`` (what its
  ``Loss`` reductions and TF train step apply; ``keras.src.losses.loss``), so CSKDModel's
  method terms are scaled exactly as Keras scales a compiled loss;
* :func:`declare_direction`: the ``_direction`` ("up"/"down") Keras' monitor callbacks
  read from a metric to infer ``mode`` (Keras' own metrics set it privately);
* :func:`loss_tracker`: Keras' own ``loss`` metric of a compiled model
  (``Trainer._loss_tracker``), which a train step that owns its tape must update as
  Keras' does, so ``loss``/``val_loss`` come from the same tracker;
* :func:`metric_group`: a group of metrics Keras' ``MonitorCallback`` looks into when it
  infers a monitor's direction (it inspects only Keras' private ``MetricsList`` /
  ``CompileMetrics`` containers), for CSKDModel's loss terms and feature metrics;
* :class:`PrebuiltSymbolicBuild`: Keras 3.15's TF trainer builds a model under a strategy
  by reducing a real input batch across replicas, which MultiWorkerMirroredStrategy
  rejects for the nested ((anchor, partner), label) batch; this mixin builds from an
  example batch of the model's input signature instead (``Trainer._symbolic_build``);
* :func:`quiet_failed_trial_tracebacks`: Keras Tuner prints the traceback of every
  failed trial while ``keras_tuner.src.config.DEBUG`` is true (its default) and has
  no public switch; cskd-tune prints its own one-line reason instead.

Importing this module imports neither Keras nor Keras Tuner: the tuning package
must stay importable without TensorFlow.
"""

from __future__ import annotations

import functools

# What tests/test_compat.py checks, in one place: (module, attribute) pairs.
KERAS_PRIVATE = ("keras.src.backend.tensorflow.trainer", "_collective_all_reduce_multi_worker")
KERAS_LOSS_SCALING = ("keras.src.losses.loss", "scale_loss_for_distribution",
                      "unscale_loss_for_distribution")
KERAS_METRICS_LIST = ("keras.src.trainers.compile_utils", "MetricsList")
KERAS_TUNER_PRIVATE = ("keras_tuner.src.config", "DEBUG")


@functools.lru_cache(maxsize=1)
def _keras_multi_worker_test():
    import importlib

    module_name, attribute = KERAS_PRIVATE
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        return None


def reduces_step_outputs_across_workers(strategy) -> bool:
    """True when Keras reduces a train step's outputs across workers under ``strategy``.

    Keras 3.15 does so (concatenating along axis 0, which scalars lack) exactly when
    ``strategy`` is a MultiWorkerMirroredStrategy in multi-worker mode. A Keras
    without the private helper falls back to False: step outputs are left as scalars,
    as on one worker.
    """
    test = _keras_multi_worker_test()
    return bool(test(strategy)) if test is not None else False


def all_sublayers(model) -> list:
    """Every layer inside ``model`` (not ``model`` itself), nested ones included, once each."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def _keras_attribute(module_name, attribute):
    import importlib

    return getattr(importlib.import_module(module_name), attribute)


def scale_loss_for_distribution(value):
    """``value`` / R under a ``tf.distribute`` strategy of R replicas (Keras' own scaling)."""
    return _keras_attribute(KERAS_LOSS_SCALING[0], KERAS_LOSS_SCALING[1])(value)


def unscale_loss_for_distribution(value):
    """``value`` · R: the per-replica mean back from :func:`scale_loss_for_distribution`."""
    return _keras_attribute(KERAS_LOSS_SCALING[0], KERAS_LOSS_SCALING[2])(value)


def declare_direction(metric, direction):
    """Tells Keras' monitor callbacks whether ``metric`` improves going "up" or "down"
    (they read the metric's ``_direction``; Keras' own metrics set it in their __init__)."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    metric._direction = direction
    return metric


def loss_tracker(model):
    """Keras' ``loss`` Mean of a compiled model (None before compile)."""
    return model._loss_tracker


@functools.lru_cache(maxsize=1)
def _metric_group_class():
    class MetricGroup(_keras_attribute(*KERAS_METRICS_LIST)):
        def result(self):
            return {metric.name: metric.result() for metric in self.metrics}

    return MetricGroup


def metric_group(metrics, name):
    """A Keras metric whose result is ``{m.name: m.result()}`` over ``metrics`` and whose
    members' ``_direction`` Keras' EarlyStopping / ModelCheckpoint read."""
    return _metric_group_class()(list(metrics), name=name)


class PrebuiltSymbolicBuild:
    """Mixin for a keras.Model that defines ``example_batch()`` (a zero ``(x, y)`` batch of
    its input signature): under a strategy, Keras' symbolic build runs on that batch
    instead of on a real batch reduced across replicas."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return  # as Keras: the model builds when the step is traced
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=self.example_batch())


def quiet_failed_trial_tracebacks():
    """Stops Keras Tuner from printing a traceback for every failed trial.

    cskd-tune's tuner prints the traceback of unexpected errors itself, and a single
    line for a trial that diverged (which needs no traceback).
    """
    import importlib

    module_name, attribute = KERAS_TUNER_PRIVATE
    module = importlib.import_module(module_name)
    if hasattr(module, attribute):
        setattr(module, attribute, False)

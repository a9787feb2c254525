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

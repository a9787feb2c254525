"""cskd_tf: class-wise self-knowledge distillation (Yun et al., CVPR 2020) in Keras 3.

``import cskd_tf`` makes the package's saveable Keras objects (CSKDModel, its layers,
the streaming metrics, the learning-rate schedule) known to ``keras.models.load_model``
without importing TensorFlow itself: if Keras is already imported they are registered
now, otherwise right after Keras is first imported. Tools that never touch Keras (e.g.
cskd-report) so stay free of the TensorFlow import.
"""

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# The modules whose import registers the package's Keras objects (package "cskd_tf").
_KERAS_OBJECT_MODULES = ("cskd_tf.models", "cskd_tf.evaluation.streaming",
                         "cskd_tf.training.schedules")


def register_keras_objects():
    """Imports the modules that register cskd_tf's serializable Keras objects."""
    for name in _KERAS_OBJECT_MODULES:
        importlib.import_module(name)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register_keras_objects` once Keras' own import has finished.

    ``find_spec`` may be called without an import following (TensorFlow probes for Keras
    with ``importlib.util.find_spec``), so the finder leaves ``sys.meta_path`` only when
    a Keras module is actually executed.
    """

    _searching = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self._searching:
            return None
        self._searching = True  # the real finders locate Keras, not this one again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            execute(module)
            try:
                register_keras_objects()
            except Exception:  # noqa: BLE001 - never break the user's `import keras`
                # E.g. Keras was first imported from inside a cskd_tf module that is still
                # initialising; those modules register their objects as they finish.
                pass

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(f, _AfterKerasImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasImport())

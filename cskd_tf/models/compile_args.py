"""What CSKDModel.compile makes of Keras' compile arguments (one output: the logits).

* ``loss`` → a per-example function ``(labels, logits) -> (batch,)``; the model weights and
  averages it (:meth:`CSKDModel.supervised`). Default
  ``SparseCategoricalCrossentropy(from_logits=True)``; a loss that reads probabilities
  (``from_logits=False``, the string ``"sparse_categorical_crossentropy"``) is refused,
  since the model outputs logits.
* ``loss_weights`` → one float.
* ``metrics`` / ``weighted_metrics`` → (the model's own metrics, the ones Keras compiles):
  a metric with ``takes_features`` (Recall@k) or marked :func:`evaluation_only` is updated
  by the model itself, in evaluation only.
"""

from __future__ import annotations

import keras

from cskd_tf.errors import ModelError


def default_loss():
    """The supervised term when ``compile(loss=...)`` is not given."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def is_default_loss(loss):
    if loss is None:
        return True
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        config = loss.get_config()
        return config.get("from_logits") and config.get("ignore_class") is None
    return False


def logits_loss(loss):
    """A per-example function (labels, logits) -> (batch,) from a compile ``loss``."""
    if loss is None:
        loss = default_loss()
    if isinstance(loss, (list, tuple, dict)):
        raise ModelError("CSKDModel has one output (the logits); pass compile(loss=...) a "
                         "single loss, not a list or dict")
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
        if getattr(loss, "__name__", "").endswith("categorical_crossentropy"):
            raise ModelError(f"compile(loss={loss.__name__!r}) reads the outputs as "
                             "probabilities, but CSKDModel outputs logits; pass "
                             "keras.losses.SparseCategoricalCrossentropy(from_logits=True) "
                             "(the default)")
    if isinstance(loss, keras.losses.Loss):
        if loss.get_config().get("from_logits") is False:
            raise ModelError(f"compile(loss={type(loss).__name__}(from_logits=False)) reads the "
                             "outputs as probabilities, but CSKDModel outputs logits; pass "
                             "from_logits=True")
        return loss.call  # per example: the weighting and mean are the model's
    if not callable(loss):
        raise ModelError(f"compile(loss={loss!r}) is not a loss; pass a keras.losses.Loss or a "
                         "function (labels, logits) -> per-example losses")
    return loss


def single_weight(loss_weights):
    if loss_weights is None:
        return 1.0
    if isinstance(loss_weights, dict):
        loss_weights = list(loss_weights.values())
    if isinstance(loss_weights, (list, tuple)):
        if len(loss_weights) != 1:
            raise ModelError(f"CSKDModel has one output; pass one loss weight, got "
                             f"{len(loss_weights)}")
        loss_weights = loss_weights[0]
    return float(loss_weights)


def evaluation_only(metric):
    """Marks a compiled metric as updated in evaluation only (fit's validation pass,
    ``evaluate``): it is then neither computed nor logged while training. Returns it."""
    metric.evaluation_only = True
    return metric


def is_own(metric):
    """Whether CSKDModel updates ``metric`` itself (features or evaluation only)."""
    return bool(getattr(metric, "takes_features", False)
                or getattr(metric, "evaluation_only", False))


def split_metrics(metrics):
    """(the model's own metrics, the rest or None) of a compile metrics argument."""
    if metrics is None:
        return [], None
    if not isinstance(metrics, (list, tuple)):
        raise ModelError(f"CSKDModel.compile takes metrics as a list (one output), got "
                         f"{type(metrics).__name__}")
    own = [m for m in metrics if is_own(m)]
    rest = [m for m in metrics if not is_own(m)]
    return own, (rest or None)

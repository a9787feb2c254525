"""Short import path for the evaluation metrics: ``cskd_tf.metrics.<name>``.

Everything here is defined in :mod:`cskd_tf.evaluation`; see
:mod:`cskd_tf.evaluation.metrics` (numpy) and
:mod:`cskd_tf.evaluation.streaming` (Keras). The Keras classes load on first
access, as in :mod:`cskd_tf.evaluation`.
"""

from cskd_tf import evaluation as _evaluation
from cskd_tf.evaluation import (
    ReliabilityBins,
    evaluate_predictions,
    expected_calibration_error,
    negative_log_likelihood,
    recall_at_k,
    reliability_bins,
    softmax,
    top_k_error,
)

__all__ = list(_evaluation.__all__)


def __getattr__(name):
    if name in _evaluation._STREAMING:
        return getattr(_evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Evaluation metrics: numpy functions and streaming Keras metrics.

The numpy functions (:mod:`cskd_tf.evaluation.metrics`) load eagerly. The
Keras metric classes (:mod:`cskd_tf.evaluation.streaming`) load on first
access, so that computing numbers from saved arrays does not import
TensorFlow.
"""

from cskd_tf.evaluation.metrics import (
    ReliabilityBins,
    evaluate_predictions,
    expected_calibration_error,
    negative_log_likelihood,
    recall_at_k,
    reliability_bins,
    softmax,
    top_k_error,
)

_STREAMING = ("ExpectedCalibrationError", "NegativeLogLikelihood", "RecallAtK")

__all__ = [
    "ReliabilityBins",
    "evaluate_predictions",
    "expected_calibration_error",
    "negative_log_likelihood",
    "recall_at_k",
    "reliability_bins",
    "softmax",
    "top_k_error",
    *_STREAMING,
]


def __getattr__(name):
    if name in _STREAMING:
        from cskd_tf.evaluation import streaming

        return getattr(streaming, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

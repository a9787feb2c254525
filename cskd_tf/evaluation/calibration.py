"""Temperature scaling, the post-hoc calibration of Guo et al. (ICML 2017, Sec. 4.2).

One scalar ``T > 0`` divides every logit vector, ``q_i = softmax(z_i / T)``; the argmax
(hence top-k error) is unchanged, only confidence moves. ``T`` is fitted on the
validation split by minimising the negative log-likelihood

    NLL(T) = (1/n) sum_i [ log sum_c exp(z_ic / T) - z_{i,y_i} / T ].

With ``b = 1/T`` the objective ``f(b) = (1/n) sum_i [ lse(b z_i) - b z_{i,y_i} ]`` is convex
(a log-sum-exp of a linear function minus a linear term), with

    f'(b)  = (1/n) sum_i ( E_{q_i}[z_i] - z_{i,y_i} )        (q_i = softmax(b z_i))
    f''(b) = (1/n) sum_i Var_{q_i}[z_i]  >= 0,

so ``f'`` is non-decreasing and its root is the unique optimum. :func:`fit_temperature`
finds it by Newton's method safeguarded with bisection on a bracket of ``b`` (no random
start, no tolerance on a noisy objective: the same logits always give the same ``T``).
``T`` is confined to [``T_MIN``, ``T_MAX``]; an optimum outside (for example val logits
that are all correct with huge margins, where ``T -> 0``) returns the nearest bound.

:func:`temperature_scaling_metrics` fits ``T`` on the val split ONLY and reports, for every
split, ``ece_ts`` (percent, like ``ece``), ``nll_ts`` (nats) and ``temperature_ts``. A run
without a val split (``config.protocol = "paper"``) gets no such fields: fitting on test
would report test numbers tuned on test.

Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
"""

from __future__ import annotations

import numpy as np

from cskd_tf.evaluation.metrics import (
    _check_labels,
    _check_scores,
    expected_calibration_error,
    negative_log_likelihood,
    softmax,
)

T_MIN = 0.01
T_MAX = 100.0
FIT_SPLIT = "val"
TS_FIELDS = ("ece_ts", "nll_ts", "temperature_ts")
NO_VAL_NOTE = ("the run has no val split (config.protocol='paper', or val_fraction=0), so the "
               "metrics have no temperature-scaling fields (ece_ts, nll_ts, temperature_ts): "
               "T is fitted on val only, never on test")


def _gradient_and_curvature(z: np.ndarray, y: np.ndarray, b: float):
    """(f'(b), f''(b)) of the module docstring, in float64."""
    scaled = b * z
    scaled -= scaled.max(axis=1, keepdims=True)
    q = np.exp(scaled)
    q /= q.sum(axis=1, keepdims=True)
    mean = np.sum(q * z, axis=1)
    variance = np.sum(q * (z - mean[:, None]) ** 2, axis=1)
    grad = float(np.mean(mean - z[np.arange(len(y)), y]))
    return grad, float(np.mean(variance))


def fit_temperature(logits, labels, t_min: float = T_MIN, t_max: float = T_MAX,
                    tol: float = 1e-10, max_iter: int = 200) -> float:
    """The temperature ``T`` in [t_min, t_max] minimising NLL(T) on (logits, labels).

    Safeguarded Newton on ``b = 1/T`` (see the module docstring): a Newton step that leaves
    the current bracket [lo, hi] of the root of f' is replaced by the bracket's midpoint,
    and the bracket shrinks with the sign of f' at each iterate, so it always converges.
    Stops when the bracket is narrower than ``tol`` relative to ``b`` or |f'| < ``tol``.
    """
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min!r}, t_max={t_max!r}")
    z = _check_scores(logits, "logits", probabilities=False)
    y = _check_labels(labels, z.shape[0], z.shape[1])
    # Row centring leaves softmax and f' unchanged and keeps z * b moderate.
    z = z - z.mean(axis=1, keepdims=True)
    lo, hi = 1.0 / t_max, 1.0 / t_min
    grad_lo, _ = _gradient_and_curvature(z, y, lo)
    if grad_lo >= 0:  # f increasing on the whole bracket: the optimum is T >= t_max
        return float(t_max)
    grad_hi, _ = _gradient_and_curvature(z, y, hi)
    if grad_hi <= 0:  # f decreasing on the whole bracket: T <= t_min
        return float(t_min)
    b = min(max(1.0, lo), hi)  # start from T = 1, the model as trained
    for _ in range(max_iter):
        grad, curvature = _gradient_and_curvature(z, y, b)
        if abs(grad) < tol:
            break
        if grad > 0:
            hi = b
        else:
            lo = b
        if hi - lo <= tol * max(b, 1.0):
            break
        step = b - grad / curvature if curvature > 0 else np.nan
        b = step if lo < step < hi else 0.5 * (lo + hi)
    return float(1.0 / b)


def scaled_probabilities(logits, temperature: float) -> np.ndarray:
    """``softmax(z / T)`` row-wise, float64."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature))


def scaled_metrics(logits, labels, temperature: float, num_bins: int = 15) -> dict:
    """``ece_ts`` (percent), ``nll_ts`` (nats) and ``temperature_ts`` at a given ``T``."""
    probs = scaled_probabilities(logits, temperature)
    return {"ece_ts": 100.0 * expected_calibration_error(probs, labels, num_bins),
            "nll_ts": negative_log_likelihood(probs, labels),
            "temperature_ts": float(temperature)}


def temperature_scaling_metrics(predictions: dict, num_bins: int = 15,
                                fit_split: str = FIT_SPLIT) -> dict:
    """{split: scaled_metrics} with ``T`` fitted on ``predictions[fit_split]`` only.

    ``predictions`` maps split name -> (logits, labels). Returns {} when there is no
    ``fit_split`` (then no split gets temperature-scaled numbers; T is never fitted on test).
    """
    if fit_split not in predictions:
        return {}
    temperature = fit_temperature(*predictions[fit_split])
    return {split: scaled_metrics(logits, labels, temperature, num_bins)
            for split, (logits, labels) in predictions.items()}

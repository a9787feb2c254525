"""Evaluation metrics of the CS-KD paper, computed with numpy on whole arrays.

Yun et al., "Regularizing Class-wise Predictions via Self-knowledge
Distillation", CVPR 2020, report for every method (Tables 2-4):

* Top-1 and top-5 error, in percent.
* ECE, the expected calibration error of Guo et al. (2017), in percent.
* Recall@1 of the penultimate features under cosine similarity, in percent.

We add the negative log-likelihood (in nats), which is the other calibration
number of Guo et al. (2017).

The functions here take whole arrays and return fractions (or nats); only
:func:`evaluate_predictions` converts to the paper's percentages. Every
function checks its inputs and raises :class:`ValueError` with a one-line
message, because a silently wrong metric costs a whole training run to
discover. ECE (and the reliability bins), NLL and Recall@k are not written
again here: they run, in float64 where the inputs allow, the formulas the streaming
Keras metrics (:mod:`cskd_tf.evaluation.streaming`) accumulate, from
:mod:`cskd_tf.evaluation.formulas` (imported on first call, so importing
this module needs no TensorFlow). Top-k error and
the softmax are only here.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

# The paper's top-5 error; with fewer classes, top-C (i.e. error 0).
TOP5 = 5

# Rows of the database-by-query similarity block in recall_at_k are chosen so
# that one block holds about this many entries (16 Mi floats, 64 MiB in
# float32), whatever n is. The block is also capped at 1024 rows.
_RECALL_BLOCK_ENTRIES = 1 << 24
_RECALL_MAX_BLOCK_ROWS = 1024

# Rows per block in top_k_error: keeps the (rows, C) comparison masks small for
# ImageNet-sized C.
_TOPK_BLOCK_ROWS = 8192


# --------------------------------------------------------------------------
# Input checks.
# --------------------------------------------------------------------------


def _check_scores(scores, name: str, probabilities: bool) -> np.ndarray:
    """A finite (n, C) float64 array; with ``probabilities``, values in [0, 1]."""
    arr = np.asarray(scores)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, num_classes), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one sample")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero classes: shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    if probabilities:
        # A small tolerance: float32 softmax outputs can exceed 1 by an ulp.
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0 + 1e-6:
            raise ValueError(
                f"{name} must be probabilities in [0, 1], got values in [{lo:.6g}, {hi:.6g}]"
                " (pass logits to evaluate_predictions instead)"
            )
    return arr


def _check_labels(labels, n: int, num_classes: int | None, name: str = "labels") -> np.ndarray:
    """Integer labels of shape (n,) (or (n, 1)), in [0, num_classes) when given."""
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (n,), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but the predictions have {n} rows")
    if np.issubdtype(arr.dtype, np.bool_):
        raise ValueError(f"{name} must be integer class indices, got dtype bool")
    if np.issubdtype(arr.dtype, np.floating):
        # Float labels are accepted only when they are whole numbers, e.g.
        # labels that went through a float tensor.
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must be integer class indices, got non-integer floats")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n and arr.min() < 0:
        raise ValueError(f"{name} out of range: found {int(arr.min())} < 0")
    if n and num_classes is not None and arr.max() >= num_classes:
        raise ValueError(
            f"{name} out of range: found {int(arr.max())} with only {num_classes} classes"
        )
    return arr


def _check_int(value, name: str) -> int:
    # bool is an int subclass, but k=True is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _check_bins(num_bins) -> int:
    num_bins = _check_int(num_bins, "num_bins")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    return num_bins


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64, stable for large logits.

    ``softmax(z)_c = exp(z_c - max_j z_j) / sum_j exp(z_j - max_j z_j)``;
    subtracting the row maximum leaves the result unchanged and keeps ``exp``
    from overflowing.
    """
    z = _check_scores(logits, "logits", probabilities=False)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------
# Calibration.
# --------------------------------------------------------------------------


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of a reliability diagram (Guo et al., 2017, Fig. 1).

    ``edges`` has ``num_bins + 1`` entries, bin ``b`` being
    ``(edges[b], edges[b + 1]]``. ``accuracy`` and ``confidence`` are 0 for an
    empty bin; use ``counts > 0`` to hide those when plotting.
    """

    edges: np.ndarray  # (num_bins + 1,) float64
    counts: np.ndarray  # (num_bins,) int64, samples per bin
    accuracy: np.ndarray  # (num_bins,) float64, fraction correct in the bin
    confidence: np.ndarray  # (num_bins,) float64, mean max-probability in the bin


def reliability_bins(probs, labels, num_bins: int = 15) -> ReliabilityBins:
    """Counts, accuracy and mean confidence of equal-width confidence bins.

    With ``conf_i = max_c p_ic`` and ``pred_i = argmax_c p_ic``, bin ``b`` of
    ``B = num_bins`` holds ``B_b = {i : b/B < conf_i <= (b+1)/B}`` and reports

    * ``counts[b] = |B_b|``
    * ``accuracy[b] = (1/|B_b|) sum_{i in B_b} 1[pred_i == y_i]``
    * ``confidence[b] = (1/|B_b|) sum_{i in B_b} conf_i``

    as defined by Guo et al., "On Calibration of Modern Neural Networks",
    ICML 2017, Sec. 2. Ties in the argmax go to the lowest class index.
    """
    num_bins = _check_bins(num_bins)
    p = _check_scores(probs, "probs", probabilities=True)
    y = _check_labels(labels, p.shape[0], p.shape[1])

    count, correct, confidence = _bin_sums(p, y, num_bins)
    safe = np.maximum(count, 1)
    return ReliabilityBins(
        edges=np.arange(num_bins + 1, dtype=np.float64) / num_bins,
        counts=np.rint(count).astype(np.int64),
        accuracy=correct / safe,
        confidence=confidence / safe,
    )


def _bin_sums(p: np.ndarray, y: np.ndarray, num_bins: int):
    """Float64 per-bin (count, correct, confidence sum): the streaming metric's formula."""
    from cskd_tf.evaluation import formulas

    sums = formulas.calibration_bin_sums(y.astype(np.int32), p,
                                          formulas.inner_bin_edges(num_bins, "float64"))
    return tuple(np.asarray(v, dtype=np.float64) for v in sums)


def expected_calibration_error(probs, labels, num_bins: int = 15) -> float:
    """Expected calibration error (ECE), as a fraction in [0, 1].

    ``ECE = sum_b (|B_b| / n) * |acc(B_b) - conf(B_b)|``

    over ``B = num_bins`` equal-width bins of the confidence
    ``conf_i = max_c p_ic``, bin ``b`` holding ``b/B < conf_i <= (b+1)/B``
    (see :func:`reliability_bins`). This is Eq. (3) of Guo et al., "On
    Calibration of Modern Neural Networks", ICML 2017, with their 15 bins, the
    ECE that the CS-KD paper (Yun et al., CVPR 2020, Table 3) reports.

    Args:
        probs: (n, C) predicted probabilities.
        labels: (n,) integer class indices.
        num_bins: number of equal-width bins over (0, 1].

    Returns:
        ECE as a fraction; multiply by 100 for the paper's percent.
    """
    num_bins = _check_bins(num_bins)
    p = _check_scores(probs, "probs", probabilities=True)
    y = _check_labels(labels, p.shape[0], p.shape[1])
    from cskd_tf.evaluation.formulas import ece_from_bin_sums

    return float(ece_from_bin_sums(*_bin_sums(p, y, num_bins)))


def negative_log_likelihood(probs, labels) -> float:
    """Mean negative log-likelihood of the true class, in nats.

    ``NLL = -(1/n) sum_i log(max(p_{i, y_i}, 1e-12))``

    (Guo et al., ICML 2017, Sec. 2, "Negative log likelihood"). The clip keeps
    one probability of exactly 0 from making the mean infinite. Rows are not
    renormalised.
    """
    p = _check_scores(probs, "probs", probabilities=True)
    y = _check_labels(labels, p.shape[0], p.shape[1])
    from cskd_tf.evaluation.formulas import per_sample_nll

    return float(np.mean(np.asarray(per_sample_nll(y.astype(np.int32), p, from_logits=False))))


# --------------------------------------------------------------------------
# Classification error.
# --------------------------------------------------------------------------


def top_k_error(probs_or_logits, labels, k: int) -> float:
    """Top-k error, as a fraction: the share of samples whose label is not
    among the k highest scores.

    ``err_k = (1/n) sum_i 1[rank_i >= k]``, with
    ``rank_i = |{c : s_ic > s_{i,y_i}}| + |{c < y_i : s_ic = s_{i,y_i}}|``

    i.e. ties are broken towards the lower class index, as ``argmax`` does.
    Softmax is monotonic, so probabilities and logits give the same error.
    This is 1 - top-k accuracy (the top-1/top-5 error of Yun et al., CVPR 2020,
    Tables 2-4).
    """
    s = _check_scores(probs_or_logits, "probs_or_logits", probabilities=False)
    n, num_classes = s.shape
    k = _check_int(k, "k")
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must be in [1, {num_classes}] for {num_classes} classes, got {k}")
    y = _check_labels(labels, n, num_classes)

    classes = np.arange(num_classes)
    misses = 0
    for start in range(0, n, _TOPK_BLOCK_ROWS):
        sb = s[start : start + _TOPK_BLOCK_ROWS]
        yb = y[start : start + _TOPK_BLOCK_ROWS]
        true_score = sb[np.arange(sb.shape[0]), yb][:, None]
        rank = np.count_nonzero(sb > true_score, axis=1) + np.count_nonzero(
            (sb == true_score) & (classes[None, :] < yb[:, None]), axis=1
        )
        misses += int(np.count_nonzero(rank >= k))
    return misses / n


# --------------------------------------------------------------------------
# Retrieval.
# --------------------------------------------------------------------------


def recall_at_k(features, labels, k: int = 1) -> float:
    """Recall@k of cosine-similarity retrieval, as a fraction.

    Every sample queries all the others (itself excluded):

    ``R@k = (1/n) sum_i 1[exists j in N_k(i) : y_j = y_i]``

    where ``N_k(i)`` are the k samples ``j != i`` of highest cosine similarity
    ``<f_i, f_j> / (|f_i| |f_j|)``. This is the Recall@1 of Yun et al.,
    CVPR 2020 (Table 4), following the retrieval protocol of Song et al.,
    "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016.

    Ties: a neighbour of equal similarity with a lower index comes first, so
    the result does not depend on the sort algorithm. A zero feature vector has
    similarity 0 to everything.

    How: this runs the formula of the streaming :class:`RecallAtK`
    (:func:`cskd_tf.evaluation.formulas.recall_update`) with room for all n
    samples, fed in blocks of queries so that one block of similarities holds
    about 16 Mi entries whatever n is (~64 MiB in float32); the state adds
    (n + 1)(d + 2k + 1) entries. Float32 features are compared in float32,
    float64 in float64.

    Args:
        features: (n, d) features, e.g. the penultimate layer.
        labels: (n,) integer labels.
        k: number of neighbours, 1 <= k < n.
    """
    f = np.asarray(features)
    if f.ndim != 2:
        raise ValueError(f"features must have shape (n, d), got shape {f.shape}")
    if not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
        raise ValueError(f"features must be a numeric array, got dtype {f.dtype}")
    n = f.shape[0]
    k = _check_int(k, "k")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        raise ValueError(f"k must be < n (each query has n - 1 = {n - 1} neighbours), got k={k}")
    dtype = np.result_type(f.dtype, np.float32)
    f = f.astype(dtype, copy=False)
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or infinite values")
    y = _check_labels(labels, n, None)

    from cskd_tf.evaluation import formulas

    # The streaming metric's state over all n samples, fed ``rows`` queries at a time.
    rows = max(1, min(_RECALL_MAX_BLOCK_ROWS, _RECALL_BLOCK_ENTRIES // n))
    state = formulas.empty_recall_state(n, k, f.shape[1], dtype.name)
    y = y.astype(np.int32)
    for start in range(0, n, rows):
        state = formulas.recall_update(state, f[start:start + rows], y[start:start + rows], k)
    # The hit count, exact: the fraction comes back in the features' dtype (float32 holds
    # it to ~1e-7 relative, well inside 1/(2n) for any n below a million).
    hits = round(float(formulas.recall_from_state(state)) * n)
    return hits / n


# --------------------------------------------------------------------------
# Everything the paper reports.
# --------------------------------------------------------------------------


def evaluate_predictions(logits, labels, features=None, num_bins: int = 15) -> dict:
    """The paper's test metrics from logits (and optionally features).

    Returns a dict with

    * ``top1_error``, ``top5_error``: :func:`top_k_error` in percent; top-5
      uses ``k = min(5, C)``, so with fewer than 5 classes it is 0.
    * ``ece``: :func:`expected_calibration_error` with ``num_bins`` bins, in
      percent.
    * ``recall_at_1``: :func:`recall_at_k` with k = 1, in percent; ``None``
      when ``features`` is None.
    * ``nll``: :func:`negative_log_likelihood`, in nats.

    Probabilities come from a float64 :func:`softmax` of ``logits``; the top-k
    errors rank the logits themselves.
    """
    z = _check_scores(logits, "logits", probabilities=False)
    n, num_classes = z.shape
    y = _check_labels(labels, n, num_classes)
    probs = softmax(z)
    result = {
        # Ranked on the logits: softmax can round two close logits to the same
        # probability (or both to 0), which would create ties.
        "top1_error": 100.0 * top_k_error(z, y, 1),
        "top5_error": 100.0 * top_k_error(z, y, min(TOP5, num_classes)),
        "ece": 100.0 * expected_calibration_error(probs, y, num_bins),
        "recall_at_1": None,
        "nll": negative_log_likelihood(probs, y),
    }
    if features is not None:
        feats = np.asarray(features)
        if feats.ndim != 2 or feats.shape[0] != n:
            raise ValueError(
                f"features must have shape ({n}, d) to match the logits, got shape {feats.shape}"
            )
        result["recall_at_1"] = 100.0 * recall_at_k(feats, y, 1)
    return result

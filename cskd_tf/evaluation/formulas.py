"""The calibration and retrieval formulas, written once in ``keras.ops``.

The streaming Keras metrics (:mod:`cskd_tf.evaluation.streaming`, the
``compile(metrics=...)`` API) accumulate them batch by batch; the numpy
functions of :mod:`cskd_tf.evaluation.metrics` (evaluation, reports, plots)
run them on whole arrays, in float64 where the inputs allow. Both therefore
give the same numbers, up to the state's dtype:

* ECE and the reliability bins: :func:`calibration_bin_sums`,
  :func:`ece_from_bin_sums` (Guo et al., ICML 2017, Eq. 3).
* NLL: :func:`per_sample_nll` (Guo et al., ICML 2017, Sec. 2).
* Recall@k of cosine similarity: :func:`recall_update`,
  :func:`recall_from_state` (Yun et al., CVPR 2020, Table 4; Song et al.,
  CVPR 2016).

Everything uses static shapes, so it runs inside a ``tf.function`` and under XLA.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
from keras import ops

# Probabilities below this are clipped before the log, so a single confident mistake costs
# at most -log(1e-12) ~ 27.6 nats instead of inf.
NLL_EPS = 1e-12

# Masked similarities in RecallAtK. Cosine similarity lies in [-1, 1], so any
# value below -1.5 marks "no neighbour". A finite mask keeps top_k and the
# comparisons free of inf arithmetic.
NO_NEIGHBOUR = -2.0
NO_NEIGHBOUR_BELOW = -1.5


def inner_bin_edges(num_bins, dtype="float32") -> np.ndarray:
    """The interior confidence-bin edges b/B, b = 1..B-1, in ``dtype``.

    In float64 they are exactly the edges of Guo et al. (2017). In a narrower dtype each is
    the largest representable value <= the float64 edge, so ``conf > edge`` for a float32
    confidence gives the float64 comparison's answer and a confidence of exactly b/B stays
    in bin b - 1 (no ``ceil(conf * B)`` rounding across the edge).
    """
    edges = np.arange(1, num_bins, dtype=np.float64) / num_bins
    if np.dtype(dtype) == np.float64:
        return edges
    narrow = edges.astype(dtype)
    too_big = narrow.astype(np.float64) > edges
    narrow[too_big] = np.nextafter(narrow[too_big], np.array(-np.inf, dtype))
    return narrow


def calibration_bin_sums(labels, probs, inner_edges, weights=None):
    """Per-bin sample count, correct count and confidence sum of a batch.

    With ``conf_i = max_c p_ic`` and ``pred_i = argmax_c p_ic`` (ties: lowest class), bin
    ``b`` of ``B = len(inner_edges) + 1`` holds ``b/B < conf_i <= (b+1)/B`` (a confidence of
    0 joins bin 0) and gets ``(Σ w_i, Σ w_i 1[pred_i = y_i], Σ w_i conf_i)`` over its
    members (Guo et al., ICML 2017, Sec. 2; w_i = 1 without ``weights``).
    """
    dtype = keras.backend.standardize_dtype(probs.dtype)
    conf = ops.max(probs, axis=-1)
    pred = ops.cast(ops.argmax(probs, axis=-1), "int32")
    correct = ops.cast(ops.equal(pred, labels), dtype)
    # Bin index = number of interior edges strictly below conf: B - 1 comparisons per
    # sample, exact and free of data-dependent shapes.
    edges = ops.convert_to_tensor(inner_edges, dtype=dtype)
    above = ops.cast(ops.greater(conf[:, None], edges[None, :]), "int32")
    member = ops.one_hot(ops.sum(above, axis=-1), len(inner_edges) + 1, dtype=dtype)
    if weights is not None:
        member = member * weights[:, None]
    return (ops.sum(member, axis=0), ops.sum(member * correct[:, None], axis=0),
            ops.sum(member * conf[:, None], axis=0))


def ece_from_bin_sums(count, correct, confidence):
    """``ECE = Σ_b (|B_b| / n) |acc(B_b) - conf(B_b)| = (1/n) Σ_b |correct_b - conf_sum_b|``.

    Guo et al., ICML 2017, Eq. 3 (0 when no sample was seen).
    """
    n = ops.sum(count)
    gap = ops.sum(ops.abs(correct - confidence))
    return ops.where(n > 0, gap / ops.maximum(n, 1e-12), 0.0)


def per_sample_nll(labels, y_pred, from_logits):
    """``-log max(p_{i, y_i}, 1e-12)`` per sample, in nats (Guo et al., ICML 2017, Sec. 2).

    From logits it uses ``log_softmax``, which stays finite where ``log(softmax)`` would
    underflow. A one-hot product instead of a gather: an out-of-range label inside a graph
    then reads probability 0 instead of failing on some devices and not others.
    """
    dtype = keras.backend.standardize_dtype(y_pred.dtype)
    pick = ops.one_hot(labels, y_pred.shape[-1], dtype=dtype)
    if from_logits:
        log_p = ops.sum(ops.log_softmax(y_pred, axis=-1) * pick, axis=-1)
    else:
        log_p = ops.log(ops.clip(ops.sum(y_pred * pick, axis=-1), NLL_EPS, 1.0))
    return -ops.clip(log_p, float(np.log(NLL_EPS)), 0.0)


class RecallState(NamedTuple):
    """Recall@k's running state over at most ``capacity`` samples (+ one sink row).

    ``features`` (rows, d) are L2-normalised, ``neighbour_sim`` / ``neighbour_label``
    (rows, k) each stored sample's k nearest stored neighbours so far (similarity -2 and
    label -1 where there is none yet), ``count`` the samples stored.
    """

    features: object
    labels: object
    neighbour_sim: object
    neighbour_label: object
    count: object


def empty_recall_state(capacity, k, feature_dim, dtype="float32") -> RecallState:
    rows = capacity + 1  # the last row is a sink for ignored samples
    return RecallState(ops.zeros((rows, feature_dim), dtype), ops.zeros((rows,), "int32"),
                       ops.full((rows, k), NO_NEIGHBOUR, dtype), ops.full((rows, k), -1, "int32"),
                       ops.convert_to_tensor(0, "int32"))


def recall_update(state: RecallState, features, labels, k, keep=None) -> RecallState:
    """The state after a batch of (features, int labels); ``keep`` (bool) skips samples.

    The batch is L2-normalised (a zero row stays zero: similarity 0 to everything) and
    stored while there is room; its rows find their k nearest among all stored samples
    (themselves excluded) and every stored row merges the new rows into its own k nearest.
    Ties go to the lower index: old neighbours come first in the candidates and top_k
    keeps equal values in order of position. Cost O(capacity · batch · d).
    """
    cap = state.labels.shape[0] - 1
    norm = ops.sqrt(ops.sum(features * features, axis=-1, keepdims=True))
    f = features / ops.where(norm > 0, norm, ops.ones_like(norm))
    if keep is None:
        keep = ops.ones_like(labels, dtype="bool")
    count = state.count
    pos = count + ops.cumsum(ops.cast(keep, "int32")) - 1
    stored = ops.logical_and(keep, pos < cap)
    pos = ops.where(stored, pos, cap)[:, None]  # ignored samples -> sink row
    new_count = ops.minimum(count + ops.sum(ops.cast(keep, "int32")), cap)

    all_features = ops.scatter_update(state.features, pos, f)
    all_labels = ops.scatter_update(state.labels, pos, labels)
    sim = ops.matmul(all_features, ops.transpose(f))  # (cap + 1, batch)

    # Stored rows: merge the new samples into their k nearest.
    new_cols = ops.where(stored[None, :], sim, NO_NEIGHBOUR)
    cand_sim = ops.concatenate([state.neighbour_sim, new_cols], axis=1)
    cand_label = ops.concatenate(
        [state.neighbour_label,
         ops.broadcast_to(labels[None, :], (cap + 1, ops.shape(labels)[0]))], axis=1)
    merged_sim, idx = ops.top_k(cand_sim, k)
    merged_label = ops.take_along_axis(cand_label, idx, axis=1)

    # New rows: k nearest among all stored samples (earlier batches and this one),
    # themselves and empty rows excluded.
    cols = ops.arange(cap + 1, dtype="int32")
    valid = ops.logical_and(cols[None, :] < new_count, cols[None, :] != pos)
    query_sim = ops.where(valid, ops.transpose(sim), NO_NEIGHBOUR)
    own_sim, own_idx = ops.top_k(query_sim, k)
    own_label = ops.take(all_labels, own_idx, axis=0)

    neighbour_sim = ops.scatter_update(merged_sim, pos, own_sim)
    neighbour_label = ops.scatter_update(merged_label, pos, own_label)
    neighbour_label = ops.where(neighbour_sim < NO_NEIGHBOUR_BELOW, -1, neighbour_label)
    return RecallState(all_features, all_labels, neighbour_sim, neighbour_label, new_count)


def recall_from_state(state: RecallState):
    """``R@k = (1/n) Σ_i 1[∃ j ∈ N_k(i) : y_j = y_i]`` over the n stored samples (0 if none)."""
    dtype = keras.backend.standardize_dtype(state.features.dtype)
    hit = ops.any(ops.equal(state.neighbour_label, state.labels[:, None]), axis=1)
    in_use = ops.arange(state.labels.shape[0], dtype="int32") < state.count
    hits = ops.sum(ops.cast(ops.logical_and(hit, in_use), dtype))
    n = ops.cast(state.count, dtype)
    return ops.where(n > 0, hits / ops.maximum(n, 1.0), 0.0)

"""Streaming Keras metrics for ``model.compile(metrics=[...])``.

Each metric keeps running sums in non-trainable state variables and, after any
sequence of ``update_state`` calls, ``result()`` equals the matching numpy
function of :mod:`cskd_tf.evaluation.metrics` on the concatenated batches
(up to float32 rounding). Updates use ``keras.ops`` only, with static shapes,
so they run inside a ``tf.function`` and under XLA (``jit_compile=True``).

Labels (``y_true``) may be class indices of shape (batch,) or (batch, 1), or
one-hot rows of shape (batch, C). A ``sample_weight`` weights the ECE and NLL
sums; :class:`RecallAtK` only uses it to skip samples of weight 0 (e.g. the
padding of a last, partial batch).

When running eagerly, labels out of range and non-finite predictions raise
``ValueError`` as the numpy functions do; inside a compiled graph nothing can
be checked, and a label out of range counts as a miss (probability 0).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from cskd_tf.evaluation.metrics import NLL_EPS

# Masked similarities in RecallAtK. Cosine similarity lies in [-1, 1], so any
# value below -1.5 marks "no neighbour". A finite mask keeps top_k and the
# comparisons free of inf arithmetic.
_NO_NEIGHBOUR = -2.0
_NO_NEIGHBOUR_BELOW = -1.5


def _eager_numpy(x):
    """``x`` as a numpy array when it holds concrete values, else None."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return x
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly() and tf.is_tensor(x) and hasattr(x, "numpy"):
            return x.numpy()
    return None


def _check_eager(labels, predictions, num_classes, name):
    """One-line ValueErrors for bad inputs seen outside a graph."""
    y = _eager_numpy(labels)
    p = _eager_numpy(predictions)
    if p is not None and not np.all(np.isfinite(p)):
        raise ValueError(f"{name}: y_pred contains NaN or infinite values")
    if y is not None and y.size:
        y = np.asarray(y)
        if num_classes is not None and y.ndim == 2 and y.shape[-1] == num_classes > 1:
            return  # one-hot rows; nothing to range-check
        if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
            raise ValueError(
                f"{name}: labels out of range: found values in [{y.min()}, {y.max()}]"
                + (f" with {num_classes} classes" if num_classes is not None else "")
            )


def _sparse_labels(y_true, num_classes=None):
    """Class indices of shape (batch,) as int32, from indices or one-hot rows."""
    shape = tuple(y_true.shape)
    if len(shape) == 2 and shape[-1] is not None and shape[-1] > 1:
        if num_classes is not None and shape[-1] != num_classes:
            raise ValueError(
                f"y_true has shape {shape}: expected class indices or one-hot rows "
                f"of width {num_classes}"
            )
        return ops.cast(ops.argmax(y_true, axis=-1), "int32")
    if len(shape) > 1:
        y_true = ops.reshape(y_true, (-1,))
    return ops.cast(y_true, "int32")


def _sample_weight(sample_weight, dtype):
    """Per-sample weights of shape (batch,), or None."""
    if sample_weight is None:
        return None
    w = ops.cast(sample_weight, dtype)
    if len(w.shape) > 1:
        w = ops.reshape(w, (-1,))
    return w


def _check_2d(y_pred, name):
    if len(y_pred.shape) != 2:
        raise ValueError(
            f"{name} expects y_pred of shape (batch, dim), got shape {tuple(y_pred.shape)}"
        )


@keras.saving.register_keras_serializable(package="cskd_tf")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error over all batches seen, as a fraction.

    ``ECE = sum_b (|B_b| / n) |acc(B_b) - conf(B_b)|
          = (1/n) sum_b |correct_b - conf_sum_b|``

    with ``num_bins`` equal-width bins of the confidence ``max_c p_c``, bin
    ``b`` holding ``b/B < conf <= (b+1)/B`` (Guo et al., ICML 2017, Eq. 3; see
    :func:`cskd_tf.evaluation.metrics.expected_calibration_error`). The state
    is three vectors of length ``num_bins``: sample count, correct count and
    confidence sum per bin, which is all the second form of the sum needs.

    Args:
        num_bins: number of bins over (0, 1].
        from_logits: whether ``y_pred`` are logits (softmax is applied) or
            probabilities.
        name: metric name, the key in ``model.evaluate`` logs.
        dtype: dtype of the state (float32 by default; counts stay exact up
            to 2**24 samples per bin).
    """

    def __init__(self, num_bins=15, from_logits=True, name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 1:
            raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
        self.num_bins = int(num_bins)
        self.from_logits = bool(from_logits)
        # Interior bin edges b/B, b = 1..B-1, as the largest float32 that is
        # <= the float64 edge. Then `conf > edge` for a float32 conf gives the
        # same answer as the numpy function's float64 comparison, and a
        # confidence of exactly b/B stays in bin b - 1 (no ceil(conf * B)
        # rounding across the edge).
        edges = np.arange(1, self.num_bins, dtype=np.float64) / self.num_bins
        edges32 = edges.astype(np.float32)
        too_big = edges32.astype(np.float64) > edges
        edges32[too_big] = np.nextafter(edges32[too_big], np.float32(-np.inf))
        self._inner_edges = edges32
        self.bin_count = self.add_variable(
            shape=(self.num_bins,), initializer="zeros", dtype=self.dtype, name="bin_count"
        )
        self.bin_correct = self.add_variable(
            shape=(self.num_bins,), initializer="zeros", dtype=self.dtype, name="bin_correct"
        )
        self.bin_confidence = self.add_variable(
            shape=(self.num_bins,), initializer="zeros", dtype=self.dtype, name="bin_confidence"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        _check_2d(y_pred, self.name)
        num_classes = y_pred.shape[-1]
        _check_eager(y_true, y_pred, num_classes, self.name)
        # float32 at least: mixed-precision models emit float16 logits.
        y_pred = ops.cast(y_pred, self.dtype)
        probs = ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred
        labels = _sparse_labels(y_true, num_classes)

        conf = ops.max(probs, axis=-1)
        pred = ops.cast(ops.argmax(probs, axis=-1), "int32")
        correct = ops.cast(ops.equal(pred, labels), self.dtype)
        # Bin index = number of interior edges strictly below conf: B - 1
        # comparisons per sample, exact and free of data-dependent shapes.
        edges = ops.convert_to_tensor(self._inner_edges, dtype=self.dtype)
        above = ops.cast(ops.greater(conf[:, None], edges[None, :]), "int32")
        member = ops.one_hot(ops.sum(above, axis=-1), self.num_bins, dtype=self.dtype)

        w = _sample_weight(sample_weight, self.dtype)
        if w is not None:
            member = member * w[:, None]
        self.bin_count.assign_add(ops.sum(member, axis=0))
        self.bin_correct.assign_add(ops.sum(member * correct[:, None], axis=0))
        self.bin_confidence.assign_add(ops.sum(member * conf[:, None], axis=0))

    def result(self):
        n = ops.sum(self.bin_count)
        gap = ops.sum(ops.abs(self.bin_correct - self.bin_confidence))
        return ops.where(n > 0, gap / ops.maximum(n, 1e-12), 0.0)

    def get_config(self):
        config = super().get_config()
        config.update(num_bins=self.num_bins, from_logits=self.from_logits)
        return config


@keras.saving.register_keras_serializable(package="cskd_tf")
class NegativeLogLikelihood(keras.metrics.Metric):
    """Mean negative log-likelihood of the true class over all batches, in nats.

    ``NLL = -(sum_i w_i log max(p_{i, y_i}, 1e-12)) / sum_i w_i``

    (Guo et al., ICML 2017, Sec. 2), the same clip as
    :func:`cskd_tf.evaluation.metrics.negative_log_likelihood`. From logits it
    uses ``log_softmax``, which stays finite where ``log(softmax)`` would
    underflow.

    Args:
        from_logits: whether ``y_pred`` are logits or probabilities.
        name: metric name.
        dtype: dtype of the state.
    """

    def __init__(self, from_logits=True, name="nll", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, name="total"
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, name="count"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        _check_2d(y_pred, self.name)
        num_classes = y_pred.shape[-1]
        _check_eager(y_true, y_pred, num_classes, self.name)
        y_pred = ops.cast(y_pred, self.dtype)
        labels = _sparse_labels(y_true, num_classes)
        # A one-hot product instead of a gather: an out-of-range label inside
        # a graph then reads probability 0 instead of failing on some devices
        # and not others.
        pick = ops.one_hot(labels, num_classes, dtype=self.dtype)
        if self.from_logits:
            log_p = ops.sum(ops.log_softmax(y_pred, axis=-1) * pick, axis=-1)
        else:
            log_p = ops.log(ops.clip(ops.sum(y_pred * pick, axis=-1), NLL_EPS, 1.0))
        nll = -ops.clip(log_p, float(np.log(NLL_EPS)), 0.0)

        w = _sample_weight(sample_weight, self.dtype)
        if w is None:
            self.total.assign_add(ops.sum(nll))
            self.count.assign_add(ops.cast(ops.shape(nll)[0], self.dtype))
        else:
            self.total.assign_add(ops.sum(nll * w))
            self.count.assign_add(ops.sum(w))

    def result(self):
        return ops.where(self.count > 0, self.total / ops.maximum(self.count, 1e-12), 0.0)

    def get_config(self):
        config = super().get_config()
        config.update(from_logits=self.from_logits)
        return config


@keras.saving.register_keras_serializable(package="cskd_tf")
class RecallAtK(keras.metrics.Metric):
    """Recall@k of cosine-similarity retrieval among the samples seen.

    ``y_pred`` are feature vectors (attach the metric to an embedding output).
    Every stored sample queries all the other stored samples:

    ``R@k = (1/n) sum_i 1[exists j in N_k(i), j != i : y_j = y_i]``

    as :func:`cskd_tf.evaluation.metrics.recall_at_k` (Yun et al., CVPR 2020,
    Table 4), with the same tie rule (equal similarity: lower index first).

    **At most ``max_samples`` samples are kept**: the first ``max_samples``
    after the last ``reset_state()``; later ones are ignored. Recall over a
    larger test set needs the numpy function on collected features.

    How: the state holds a buffer of the normalised features and labels, and,
    for every stored sample, the similarities and labels of its k nearest
    stored neighbours so far. A batch is appended to the buffer, its rows find
    their k nearest neighbours among all stored samples, and every stored row
    merges the new rows into its own k nearest. This costs
    O(max_samples * batch * d) per update, and ``result()`` (which Keras calls
    after every step) only reads the state, O(max_samples * k), instead of
    recomputing all pairs.

    Memory: ``(max_samples + 1) * (d + 2k + 1)`` state entries; 10 000
    samples of 512-d features take ~20 MiB, and one update builds a
    (max_samples, batch) similarity block.

    Under a multi-replica ``tf.distribute`` strategy only the first replica's
    samples are kept.

    Args:
        k: number of neighbours, 1 <= k < max_samples.
        max_samples: capacity of the buffer.
        feature_dim: size of the features; None builds the buffers on the
            first ``update_state`` (``model.compile`` does this for you).
        name: metric name; default ``recall_at_{k}``.
        dtype: dtype of the features buffer.
    """

    # CSKDModel.compile(metrics=[RecallAtK()]) feeds this metric the features, not logits.
    takes_features = True

    def __init__(self, k=1, max_samples=10000, feature_dim=None, name=None, dtype=None):
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if isinstance(max_samples, bool) or int(max_samples) != max_samples:
            raise ValueError(f"max_samples must be an integer, got {max_samples!r}")
        if max_samples <= k:
            raise ValueError(f"max_samples must be > k={k}, got {max_samples}")
        super().__init__(name=name or f"recall_at_{int(k)}", dtype=dtype)
        self.k = int(k)
        self.max_samples = int(max_samples)
        self.feature_dim = None
        self._built = False
        if feature_dim is not None:
            self._build(int(feature_dim))

    def _build(self, feature_dim):
        self.feature_dim = feature_dim
        rows = self.max_samples + 1  # the last row is a sink for ignored samples
        # Each replica's buffer is its own; summing them would be meaningless.
        agg = "only_first_replica"
        self.features = self.add_variable(
            shape=(rows, feature_dim), initializer="zeros", dtype=self.dtype,
            aggregation=agg, name="features",
        )
        self.labels = self.add_variable(
            shape=(rows,), initializer="zeros", dtype="int32", aggregation=agg, name="labels"
        )
        self.neighbour_sim = self.add_variable(
            shape=(rows, self.k), initializer=keras.initializers.Constant(_NO_NEIGHBOUR),
            dtype=self.dtype, aggregation=agg, name="neighbour_sim",
        )
        self.neighbour_label = self.add_variable(
            shape=(rows, self.k), initializer=keras.initializers.Constant(-1),
            dtype="int32", aggregation=agg, name="neighbour_label",
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", dtype="int32", aggregation=agg, name="count"
        )
        self._built = True

    def reset_state(self):
        if not self._built:
            return
        # The default reset writes zeros, but "no neighbour" is (-2, -1).
        for v in (self.features, self.labels, self.count):
            v.assign(ops.zeros(v.shape, dtype=v.dtype))
        self.neighbour_sim.assign(ops.full(self.neighbour_sim.shape, _NO_NEIGHBOUR, self.dtype))
        self.neighbour_label.assign(ops.full(self.neighbour_label.shape, -1, "int32"))

    def update_state(self, y_true, y_pred, sample_weight=None):
        _check_2d(y_pred, self.name)
        dim = y_pred.shape[-1]
        if dim is None:
            raise ValueError(f"{self.name} needs a static feature size, got {y_pred.shape}")
        if not self._built:
            self._build(int(dim))
        elif dim != self.feature_dim:
            raise ValueError(
                f"{self.name} was built for {self.feature_dim}-d features, got {dim}-d"
            )
        _check_eager(y_true, y_pred, None, self.name)
        cap, k = self.max_samples, self.k

        f = ops.cast(y_pred, self.dtype)
        norm = ops.sqrt(ops.sum(f * f, axis=-1, keepdims=True))
        f = f / ops.where(norm > 0, norm, ops.ones_like(norm))  # zero rows stay zero
        labels = _sparse_labels(y_true)

        keep = ops.ones_like(labels, dtype="bool")
        w = _sample_weight(sample_weight, self.dtype)
        if w is not None:
            keep = w > 0
        count = self.count.value
        pos = count + ops.cumsum(ops.cast(keep, "int32")) - 1
        stored = ops.logical_and(keep, pos < cap)
        pos = ops.where(stored, pos, cap)[:, None]  # ignored samples -> sink row
        new_count = ops.minimum(count + ops.sum(ops.cast(keep, "int32")), cap)

        features = ops.scatter_update(self.features.value, pos, f)
        all_labels = ops.scatter_update(self.labels.value, pos, labels)
        sim = ops.matmul(features, ops.transpose(f))  # (cap + 1, batch)

        # Stored rows: merge the new samples into their k nearest. The old
        # neighbours come first in the concatenation and have lower indices,
        # and top_k puts equal values in order of position, so ties still go
        # to the lower index.
        new_cols = ops.where(stored[None, :], sim, _NO_NEIGHBOUR)
        cand_sim = ops.concatenate([self.neighbour_sim.value, new_cols], axis=1)
        cand_label = ops.concatenate(
            [self.neighbour_label.value,
             ops.broadcast_to(labels[None, :], (cap + 1, ops.shape(labels)[0]))],
            axis=1,
        )
        merged_sim, idx = ops.top_k(cand_sim, k)
        merged_label = ops.take_along_axis(cand_label, idx, axis=1)

        # New rows: k nearest among all stored samples (earlier batches and
        # this one), themselves and empty rows excluded.
        cols = ops.arange(cap + 1, dtype="int32")
        valid = ops.logical_and(cols[None, :] < new_count, cols[None, :] != pos)
        query_sim = ops.where(valid, ops.transpose(sim), _NO_NEIGHBOUR)
        own_sim, own_idx = ops.top_k(query_sim, k)
        own_label = ops.take(all_labels, own_idx, axis=0)

        neighbour_sim = ops.scatter_update(merged_sim, pos, own_sim)
        neighbour_label = ops.scatter_update(merged_label, pos, own_label)
        neighbour_label = ops.where(neighbour_sim < _NO_NEIGHBOUR_BELOW, -1, neighbour_label)

        self.features.assign(features)
        self.labels.assign(all_labels)
        self.neighbour_sim.assign(neighbour_sim)
        self.neighbour_label.assign(neighbour_label)
        self.count.assign(new_count)

    def result(self):
        if not self._built:
            return ops.convert_to_tensor(0.0, dtype=self.dtype)
        hit = ops.any(ops.equal(self.neighbour_label.value, self.labels.value[:, None]), axis=1)
        in_use = ops.arange(self.max_samples + 1, dtype="int32") < self.count.value
        hits = ops.sum(ops.cast(ops.logical_and(hit, in_use), self.dtype))
        n = ops.cast(self.count.value, self.dtype)
        return ops.where(n > 0, hits / ops.maximum(n, 1.0), 0.0)

    def get_config(self):
        config = super().get_config()
        config.update(k=self.k, max_samples=self.max_samples, feature_dim=self.feature_dim)
        return config

"""Streaming Keras metrics for ``model.compile(metrics=[...])``.

Each metric keeps running sums in non-trainable state variables and, after any
sequence of ``update_state`` calls, ``result()`` equals the matching numpy
function of :mod:`cskd_tf.evaluation.metrics` on the concatenated batches
(up to float32 rounding): those functions run the same formulas, written once
in :mod:`cskd_tf.evaluation.formulas`, on whole arrays in float64. Updates use
``keras.ops`` only, with static shapes, so they run inside a ``tf.function``
and under XLA (``jit_compile=True``).

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

from cskd_tf.compat import declare_direction
from cskd_tf.evaluation.formulas import (NO_NEIGHBOUR, RecallState, calibration_bin_sums,
                                         ece_from_bin_sums, empty_recall_state, inner_bin_edges,
                                         per_sample_nll, recall_from_state, recall_update)

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
        declare_direction(self, "down")  # EarlyStopping/ModelCheckpoint infer mode="min"
        if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 1:
            raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
        self.num_bins = int(num_bins)
        self.from_logits = bool(from_logits)
        self._inner_edges = inner_bin_edges(self.num_bins, self.dtype)
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

        count, correct, confidence = calibration_bin_sums(
            labels, probs, self._inner_edges, _sample_weight(sample_weight, self.dtype))
        self.bin_count.assign_add(count)
        self.bin_correct.assign_add(correct)
        self.bin_confidence.assign_add(confidence)

    def result(self):
        return ece_from_bin_sums(self.bin_count, self.bin_correct, self.bin_confidence)

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
        declare_direction(self, "down")  # EarlyStopping/ModelCheckpoint infer mode="min"
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
        nll = per_sample_nll(labels, y_pred, self.from_logits)

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

    How (:func:`cskd_tf.evaluation.formulas.recall_update`): the state holds
    a buffer of the normalised features and labels and, for every stored
    sample, its k nearest stored neighbours so far; each batch is appended
    and merged in at O(max_samples * batch * d), and ``result()`` (which Keras
    calls after every step) only reads the state, O(max_samples * k).

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
        declare_direction(self, "up")  # EarlyStopping/ModelCheckpoint infer mode="max"
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
            shape=(rows, self.k), initializer=keras.initializers.Constant(NO_NEIGHBOUR),
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

    def _state_variables(self):
        return (self.features, self.labels, self.neighbour_sim, self.neighbour_label,
                self.count)

    def reset_state(self):
        if not self._built:
            return
        # The default reset writes zeros, but "no neighbour" is (-2, -1).
        empty = empty_recall_state(self.max_samples, self.k, self.feature_dim, self.dtype)
        for variable, value in zip(self._state_variables(), empty):
            variable.assign(value)

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
        keep = None
        w = _sample_weight(sample_weight, self.dtype)
        if w is not None:
            keep = w > 0
        state = recall_update(
            RecallState(*(v.value for v in self._state_variables())),
            ops.cast(y_pred, self.dtype), _sparse_labels(y_true), self.k, keep)
        for variable, value in zip(self._state_variables(), state):
            variable.assign(value)

    def result(self):
        if not self._built:
            return ops.convert_to_tensor(0.0, dtype=self.dtype)
        return recall_from_state(RecallState(*(v.value for v in self._state_variables())))

    def get_config(self):
        config = super().get_config()
        config.update(k=self.k, max_samples=self.max_samples, feature_dim=self.feature_dim)
        return config

"""Numpy inference: a trained model's logits and features over a dataset, and its metrics.

Not ``model.predict``: ``CSKDModel.call`` returns the logits alone (so Keras tools and
exports see a plain classifier), while the metrics need the logits, the penultimate
features (Recall@1) and the labels of the same pass, under an XLA setting chosen for
evaluation rather than the one ``model.compile`` got.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from cskd_tf import progress

# model -> {jit_compile: traced forward}. The per-epoch validation calls
# logits_and_features once per epoch on the same model; keeping its tf.function avoids a
# retrace each time, and a weak key lets the model (and its graph) be freed.
_FORWARD = weakref.WeakKeyDictionary()


def _forward_fn(model, jit_compile):
    """The model's inference forward as a tf.function, traced once per model and setting."""
    functions = _FORWARD.setdefault(model, {})
    jit_compile = bool(jit_compile)
    if jit_compile not in functions:
        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def forward(x):
            out = model.forward(x, training=False)
            return tf.cast(out["logits"], tf.float32), tf.cast(out["features"], tf.float32)
        functions[jit_compile] = forward
    return functions[jit_compile]


def _known_batches(dataset):
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality > 0 else None


def logits_and_features(model, dataset, jit_compile=False, verbose=0, label="evaluating"):
    """(logits, features, labels) as float32/numpy arrays over a dataset of (x, y).

    ``model`` is anything with ``forward(x, training=False) -> {"logits", "features"}``
    (a :class:`cskd_tf.models.CSKDModel`). ``verbose=1`` prints progress (batches, rate,
    ETA) to stderr; off by default because the per-epoch validation calls this too.
    """
    forward = _forward_fn(model, jit_compile)
    logits, features, labels = [], [], []
    with progress.Progress(label, total=_known_batches(dataset), unit="batches",
                           verbose=verbose) as bar:
        for x, y in dataset:
            out_logits, out_features = forward(x)
            logits.append(out_logits.numpy())
            features.append(out_features.numpy())
            labels.append(np.asarray(y))
            bar.update(1)
    if not logits:
        raise ValueError("the evaluation dataset is empty")
    return np.concatenate(logits), np.concatenate(features), np.concatenate(labels)


def evaluate(model, dataset, jit_compile=False, num_bins=15, verbose=1, label="evaluating"):
    """The paper's metrics for one split: top-1/top-5 error, ECE, Recall@1 (percent), NLL.

    Prints progress to stderr unless ``verbose=0`` (cskd-eval and the evaluation at the
    end of training show it; the per-epoch validation callback passes 0).
    """
    from cskd_tf.evaluation.metrics import evaluate_predictions

    logits, features, labels = logits_and_features(model, dataset, jit_compile,
                                                   verbose=verbose, label=label)
    result = evaluate_predictions(logits, labels, features=features, num_bins=num_bins)
    result["num_examples"] = int(labels.shape[0])
    return result

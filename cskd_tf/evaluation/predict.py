"""Runs a trained model over an evaluation dataset and scores it."""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from cskd_tf import progress

_FORWARD = weakref.WeakKeyDictionary()


def _forward_fn(model, jit_compile):
    """One traced inference function per model, reused across epochs."""
    key = (bool(jit_compile),)
    cache = _FORWARD.setdefault(model, {})
    if key not in cache:
        @tf.function(jit_compile=bool(jit_compile), reduce_retracing=True)
        def forward(x):
            out = model.forward(x, training=False)
            return tf.cast(out["logits"], tf.float32), tf.cast(out["features"], tf.float32)
        cache[key] = forward
    return cache[key]


def _known_batches(dataset):
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality > 0 else None


def predict(model, dataset, jit_compile=False, verbose=0, label="evaluating"):
    """(logits, features, labels) as numpy arrays over a dataset of (x, y).

    ``verbose=1`` prints progress (batches, rate, ETA) to stderr; off by default
    because the per-epoch validation and the speed benchmark call this too.
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

    logits, features, labels = predict(model, dataset, jit_compile, verbose=verbose,
                                       label=label)
    result = evaluate_predictions(logits, labels, features=features, num_bins=num_bins)
    result["num_examples"] = int(labels.shape[0])
    return result

"""The paper's metrics computed through an export alone (``cskd-eval --saved_model``).

Each split's images are decoded to uint8 exactly as the evaluation pipeline decodes them
and sent through the served signatures — ``serving_default`` for the logits and ``embed``
for the Recall@1 features — so the in-graph preprocessing is what gets scored. With the
export's own training config this gives the metrics the Keras model gives (up to float32
round-off between batched and per-image resizing).
"""

from __future__ import annotations

import numpy as np

from cskd_tf import progress
from cskd_tf.errors import ConfigError
from cskd_tf.serving import signatures as sig

# Data fields that decide which examples a split holds; a --config that differs from the
# export's training config in these evaluates other data than the run did.
DATA_FIELDS = ("dataset", "data_dir", "max_classes", "max_train_per_class", "val_fraction",
               "seed")


def data_differences(config, exported) -> list:
    return [f for f in DATA_FIELDS if config.get(f) != exported.get(f)]


def uint8_batches(split, batch_size):
    """(uint8 images (n, H, W, C), int32 labels) of a split, in its fixed order.

    Raw splits share one shape and batch directly; encoded images may differ in size, so
    consecutive images of one size are grouped (a batch never mixes sizes).
    """
    import tensorflow as tf

    records = split.records().map(lambda payload, label: (split.decode(payload),
                                                          tf.cast(label, tf.int32)),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if split.kind == "raw":
        yield from records.batch(batch_size).prefetch(2).as_numpy_iterator()
        return
    images, labels = [], []
    for image, label in records.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        if images and (image.shape != images[0].shape or len(images) == batch_size):
            yield np.stack(images), np.asarray(labels, np.int32)
            images, labels = [], []
        images.append(image)
        labels.append(label)
    if images:
        yield np.stack(images), np.asarray(labels, np.int32)


def export_logits_and_features(exported, split, batch_size):
    """(logits, embeddings, labels) of a split through the export's signatures."""
    import tensorflow as tf

    serve = exported.signature(sig.SERVING_DEFAULT)
    embed = exported.signature(sig.EMBED)
    logits, features, labels = [], [], []
    with progress.Progress(f"evaluating the export on {split.name}",
                           total=split.num_examples) as bar:
        for images, y in uint8_batches(split, batch_size):
            x = tf.constant(images)
            logits.append(serve(images=x)[sig.LOGITS].numpy())
            features.append(embed(images=x)[sig.EMBEDDINGS].numpy())
            labels.append(y)
            bar.update(len(y))
    if not logits:
        raise ConfigError(f"split {split.name} is empty")
    return np.concatenate(logits), np.concatenate(features), np.concatenate(labels)


def evaluate_export(exported, config, split_names=None) -> dict:
    """{split: metrics} as ``evaluate_splits`` reports them for the Keras model."""
    from cskd_tf import data as data_lib
    from cskd_tf.evaluation.metrics import evaluate_predictions

    info, splits = data_lib.prepare(config)
    if exported.class_names and list(info.class_names) != list(exported.class_names):
        raise ConfigError(f"the export's {len(exported.class_names)} classes are not the "
                          f"{info.num_classes} classes of {config.dataset} under this config; "
                          "evaluate with the config the model was trained with")
    names = split_names or [s for s in config.eval_splits if s in splits]
    results = {}
    for name in names:
        if name not in splits:
            raise ConfigError(f"--split={name} is not a split of {config.dataset}; choose one "
                              f"of: {', '.join(sorted(splits))}")
        logits, features, labels = export_logits_and_features(
            exported, splits[name], int(config.eval_batch_size))
        metrics = evaluate_predictions(logits, labels, features=features)
        metrics["num_examples"] = int(labels.shape[0])
        results[name] = metrics
    return results

"""The split rules applied to every source's listing (:func:`select`), in this order:

1. ``max_classes=N`` keeps classes 0..N-1 (by class index) in every split;
2. a source with no validation split gets one held out of train: ``val_fraction`` of each
   class, chosen by a generator seeded with (``seed``, class), so it is stratified and
   deterministic; model selection uses it and never looks at test (under
   ``config.protocol="paper"`` nothing is held out: see ``pipeline.apply_protocol``);
3. ``max_train_per_class=N`` keeps the first N training examples of each class in the
   source's own (sorted) order;
4. checks: at least two classes, no split empty or of one example, every class has a
   training example, labels in range.
"""

from __future__ import annotations

import numpy as np

from cskd_tf.data.sources.base import Listing
from cskd_tf.errors import DataError


def select(listing: Listing, *, dataset: str, max_classes: int, val_fraction: float,
           seed: int, max_train_per_class: int) -> Listing:
    """Applies the split rules of the module docstring; raises DataError on bad data."""
    names = list(listing.class_names)
    splits = dict(listing.splits)
    if "train" not in splits:
        raise DataError(f"dataset {dataset!r} has no training split; check config.data_dir")
    for split, data in splits.items():
        bad = (data.labels < 0) | (data.labels >= len(names))
        if bad.any():
            raise DataError(f"{dataset} {split} split has labels out of range [0, {len(names)}) "
                            f"(e.g. {int(data.labels[bad][0])}); fix the label files")
    if max_classes and max_classes < len(names):
        names = names[:max_classes]
        splits = {k: v.take(np.flatnonzero(v.labels < max_classes)) for k, v in splits.items()}
    if len(names) < 2:
        raise DataError(f"{dataset} has {len(names)} class{'' if len(names) == 1 else 'es'} "
                        f"({', '.join(map(str, names)) or 'none'}); a classifier needs at least "
                        "2: add a class (in an image folder: train/<class>/) or raise "
                        "config.max_classes")
    train = splits["train"]
    if "val" not in splits and val_fraction > 0:
        keep, held = [], []
        for c in range(len(names)):
            rows = np.flatnonzero(train.labels == c)
            # At least one per class (when the class has two) so val covers every class.
            n_val = max(0, min(max(int(round(val_fraction * len(rows))), 1), len(rows) - 1))
            perm = np.random.default_rng([int(seed) & 0xFFFFFFFF, c]).permutation(len(rows))
            held.append(rows[perm[:n_val]])
            keep.append(rows[perm[n_val:]])
        splits["val"] = train.take(np.concatenate(held))
        train = train.take(np.concatenate(keep))
    if max_train_per_class:
        rows = [np.flatnonzero(train.labels == c)[:max_train_per_class] for c in range(len(names))]
        train = train.take(np.concatenate(rows))
    splits["train"] = train
    counts = np.bincount(train.labels, minlength=len(names))
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise DataError(f"{dataset}: class {c} ({names[c]!r}) has no training example; add "
                        f"images for it or lower config.max_classes")
    for split, data in splits.items():
        if len(data) == 0:
            raise DataError(f"{dataset}: the {split} split is empty; add examples to it or "
                            f"remove it (val is then held out of train by config.val_fraction)")
        if len(data) == 1:  # Recall@1 ranks each example's neighbours: it needs two
            raise DataError(f"{dataset}: the {split} split has a single example; add more "
                            "(at least 2) or remove it (val is then held out of train by "
                            "config.val_fraction)")
    order = ["train", "val", "test"] + sorted(set(splits) - {"train", "val", "test"})
    return Listing(class_names=names, splits={k: splits[k] for k in order if k in splits})

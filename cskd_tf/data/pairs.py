"""The CS-KD pair sampler as a tf.data pipeline.

Semantics (those of the reference ``PairBatchSampler`` of Yun et al.):

* each epoch, every training example is an anchor exactly once, in a shuffled order;
* an anchor's partner is drawn uniformly *with replacement* from the anchor's class (it
  may be the anchor itself), independently for every anchor;
* anchor and partner are augmented independently.

Everything random is a stateless op keyed by (seed, epoch, ...): the permutation by
(seed, epoch, round), the partner draws by (seed, epoch), an augmentation by (seed, epoch,
position in the epoch's global order, view). So a stream is reproducible from ``seed``,
a run resumed at ``start_epoch=k`` sees exactly the batches an uninterrupted run sees from
epoch k on, and the draws do not depend on how the epoch is sharded across workers.
(:func:`pair_dataset`, for ``model.fit(ds, epochs=E)`` which iterates a dataset once per
epoch, also folds in a per-iteration number so each iteration draws new epochs.)

Batches never straddle epochs. By default an epoch is ``ceil(N / batch_size)`` batches,
the last one short when ``batch_size`` does not divide N, so every example is an anchor
exactly once per epoch (the reference's ``DataLoader`` keeps that last partial batch too).
With ``drop_remainder`` (what training under a multi-replica strategy uses, see
cskd_tf/training/distribute.py) an epoch is ``floor(N / num_shards / batch_size)`` full
batches and up to ``batch_size - 1`` anchors of each epoch (a different few each epoch) are
left out. ``steps_per_epoch > 0`` takes that many full batches per epoch instead; when that
needs more anchors than one pass has, further independent permutations are appended (each
example is then an anchor once per pass).

Sharding (``num_shards``, ``shard_index``): every worker computes the same global order and
keeps positions ``shard_index, shard_index + num_shards, ...``: across the shards each
example is an anchor once per epoch (but the ``N mod (num_shards · batch_size)`` of the
remainder); partners still come from the whole class. Every shard gets the same number of
batches, so sharding needs ``drop_remainder``.

Two modes: :func:`memory_pairs` (exact; the data — encoded or raw — in memory) and
:func:`stream_pairs` (data too large for memory: reads the per-class shards; partners come
from one shuffled, repeated stream per class picked by ``choose_from_datasets``, so they
are drawn through a shuffle buffer — approximately uniform, and without replacement within
a pass over the class — rather than exactly with replacement. Its random streams use
tf.data's seeded shuffles, so they also depend on a global ``tf.random.set_seed``.)
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from cskd_tf.errors import DataError

VIEWS = ("anchor", "partner", "view2")
# Fixed ids: the anchor's augmentation is the same whichever other views are requested.
VIEW_ID = {"anchor": 0, "partner": 1, "view2": 2}
SALT = 0x5C5D  # keeps the pair stream's random numbers apart from other uses of the seed


def check_views(views) -> tuple:
    views = tuple(views)
    if not views or any(v not in VIEWS for v in views) or len(set(views)) != len(views):
        raise ValueError(f"views={views!r}: use distinct names from {VIEWS}")
    return views


def plan(num_examples: int, batch_size: int, num_shards: int = 1, steps_per_epoch: int = 0,
         drop_remainder: bool = False):
    """(rounds, anchors per shard per epoch, batches per epoch) for the sampler.

    Without ``drop_remainder``: ``ceil(N / batch_size)`` batches, every example once.
    """
    if num_shards < 1 or batch_size < 1:
        raise ValueError("num_shards and batch_size must be >= 1")
    if num_shards > 1 and not drop_remainder and steps_per_epoch <= 0:
        # Shards of unequal length would give workers different step counts, and every
        # worker must run every (collective) step.
        raise ValueError("sharded pair streams need drop_remainder=True (every shard must "
                         "have the same number of batches)")
    if steps_per_epoch > 0:
        length = steps_per_epoch * batch_size
        rounds = max(1, math.ceil(length * num_shards / num_examples))
        return rounds, length, steps_per_epoch
    per_shard = num_examples // num_shards
    steps = per_shard // batch_size if drop_remainder else math.ceil(per_shard / batch_size)
    if steps == 0:
        raise DataError(f"the training split has {num_examples} examples, fewer than one batch "
                        f"of {batch_size} per each of {num_shards} shard(s); lower "
                        f"config.batch_size or set config.steps_per_epoch")
    return 1, (steps * batch_size if drop_remainder else per_shard), steps


def epoch_key(seed, epoch, nonce=None) -> tf.Tensor:
    """The stateless key of one epoch: every random draw of the epoch derives from it."""
    base = tf.constant([int(seed), SALT], tf.int64)
    if nonce is not None:  # pair_dataset's fresh key per iteration
        base = tf.random.experimental.stateless_fold_in(base, nonce)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def view_seed(key, position, view: int) -> tf.Tensor:
    """The stateless seed of one augmentation: keyed by (epoch key, position, view)."""
    key = tf.random.experimental.stateless_fold_in(key, 2)
    return tf.random.experimental.stateless_fold_in(
        key, tf.cast(position, tf.int64) * len(VIEWS) + view)


def epoch_indices(counts, key, *, rounds, length, num_shards=1, shard_index=0):
    """One epoch's anchors and partners on one shard, as indices into class-sorted data.

    ``key`` is the epoch's :func:`epoch_key`. Returns a dict of ``length`` rows: key
    (the epoch key, repeated), position (in the global order), anchor, partner, label.
    """
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), tf.int64)
    labels = tf.constant(np.repeat(np.arange(len(counts)), counts), tf.int64)
    counts_t = tf.constant(counts, tf.int64)
    perm_key = tf.random.experimental.stateless_fold_in(key, 0)
    order = tf.concat([
        tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.random.experimental.stateless_fold_in(perm_key, r))
        for r in range(rounds)], axis=0)
    position = shard_index + num_shards * tf.range(length, dtype=tf.int64)
    anchor = tf.gather(order, position)
    label = tf.gather(labels, anchor)
    # One uniform per global position, so a shard's partners do not depend on the sharding.
    u = tf.random.stateless_uniform([rounds * n], seed=tf.random.experimental.stateless_fold_in(
        key, 1), dtype=tf.float64)
    count = tf.gather(counts_t, label)
    offset = tf.cast(tf.floor(tf.gather(u, position) * tf.cast(count, tf.float64)), tf.int64)
    partner = tf.gather(starts, label) + tf.minimum(offset, count - 1)
    keys = tf.tile(key[None], [length, 1])
    return {"key": keys, "position": position, "anchor": anchor, "partner": partner,
            "label": label}


def _deterministic(ds):
    # Reproducible batches even if the caller's tf.data options allow reordering.
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def _emit(views, images, label):
    y = tf.cast(label, tf.int32)
    if views == ("anchor",):
        return images[0], y
    return tuple(images), y


def memory_pairs(fetch, counts, *, views=("anchor", "partner"), augment=None, seed=0,
                 start_epoch=0, num_epochs=1, batch_size=128, num_shards=1, shard_index=0,
                 steps_per_epoch=0, drop_remainder=False, reshuffle_each_iteration=False):
    """The exact sampler over in-memory data sorted by class.

    ``fetch(index) -> float32 image in [0, 1]`` reads example ``index`` (class-sorted, class
    c occupying ``sum(counts[:c]) .. + counts[c]``); ``augment(image, seed)`` or None.
    Returns (dataset over epochs start_epoch..num_epochs-1, batches per epoch).

    ``reshuffle_each_iteration``: each new iteration of the dataset draws fresh epochs (keyed
    by a per-iteration number from ``Dataset.random(seed)``, so still reproducible), for
    callers such as ``model.fit(ds, epochs=E)`` that iterate the dataset once per epoch.
    """
    views = check_views(views)
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} is not in [0, {num_shards})")
    rounds, length, steps = plan(int(np.sum(counts)), batch_size, num_shards, steps_per_epoch,
                                 drop_remainder)

    def load(e):
        cache = {}
        images = []
        for name in views:
            which = "partner" if name == "partner" else "anchor"
            if which not in cache:  # anchor and view2 decode the anchor once
                cache[which] = fetch(e[which])
            image = cache[which]
            if augment is not None:
                image = augment(image, view_seed(e["key"], e["position"], VIEW_ID[name]))
            images.append(image)
        return _emit(views, images, e["label"])

    def per_epoch(epoch, nonce=None):
        idx = epoch_indices(counts, epoch_key(seed, epoch, nonce), rounds=rounds, length=length,
                            num_shards=num_shards, shard_index=shard_index)
        return (tf.data.Dataset.from_tensor_slices(idx)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size, drop_remainder=drop_remainder))

    epochs = tf.data.Dataset.range(int(start_epoch), int(num_epochs))
    if reshuffle_each_iteration:
        ds = (tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).take(1)
              .flat_map(lambda nonce: epochs.flat_map(lambda e: per_epoch(e, nonce))))
    else:
        ds = epochs.flat_map(per_epoch)
    return _deterministic(ds.prefetch(tf.data.AUTOTUNE)), steps


def stream_pairs(split, *, views=("anchor", "partner"), augment=None, seed=0, start_epoch=0,
                 num_epochs=1, batch_size=128, num_shards=1, shard_index=0, steps_per_epoch=0,
                 shuffle_buffer=0, drop_remainder=False):
    """The streaming sampler over a PreparedSplit's per-class shards (see module docstring).

    ``shuffle_buffer`` (0 = one epoch) bounds the anchor shuffle; each class's partner
    stream shuffles through ``shuffle_buffer // num_classes`` records (0: the whole class).
    """
    views = check_views(views)
    counts = np.asarray(split.counts, np.int64)
    n, num_classes = int(counts.sum()), len(counts)
    files = [split.class_file(c) for c in range(num_classes)]
    if (counts == 0).any():
        raise DataError(f"class {int(np.flatnonzero(counts == 0)[0])} has no training example "
                        f"in {split.directory}; delete the cache folder and rerun")
    rounds, length, steps = plan(n, batch_size, num_shards, steps_per_epoch, drop_remainder)
    buffer = int(shuffle_buffer) or n
    class_buffers = [int(c) if not shuffle_buffer else max(1, min(int(c), buffer // num_classes))
                     for c in counts]
    read_buffer = 64 * 1024  # many files are open at once; keep their read buffers small

    def to_float(payload):
        return tf.image.convert_image_dtype(split.decode(payload), tf.float32)

    def per_epoch(epoch):
        key = epoch_key(seed, epoch)
        anchor_seed = tf.random.stateless_uniform(
            [], seed=tf.random.experimental.stateless_fold_in(key, 3), minval=None, maxval=None,
            dtype=tf.int64)
        class_seeds = tf.random.stateless_uniform(
            [num_classes], seed=tf.random.experimental.stateless_fold_in(
                tf.random.experimental.stateless_fold_in(key, 4), shard_index),
            minval=None, maxval=None, dtype=tf.int64)
        # Python ints: Dataset.shuffle compares its seed with (0, 0) in Python, which a
        # symbolic seed fails whenever the global TF seed is 0 (keras.utils.set_random_seed(0)).
        anchor_seed = int(anchor_seed)
        class_seeds = [int(s) for s in class_seeds.numpy()]

        def anchors():
            # Round-robin over all class files, then a seeded shuffle; two calls give the
            # same stream, one for the images and one for the labels that pick partners.
            return (tf.data.Dataset.from_tensor_slices(files)
                    .interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=read_buffer),
                                cycle_length=num_classes, block_length=1)
                    .shuffle(buffer, seed=anchor_seed, reshuffle_each_iteration=True)
                    .repeat(rounds).enumerate().shard(num_shards, shard_index).take(length))

        streams = [anchors()]
        if "partner" in views:
            labels = anchors().map(lambda p, r: split.parse(r)[1])
            per_class = [tf.data.TFRecordDataset(files[c], buffer_size=read_buffer)
                         .shuffle(class_buffers[c], seed=class_seeds[c]).repeat()
                         for c in range(num_classes)]
            streams.append(tf.data.Dataset.choose_from_datasets(per_class, labels))

        def load(anchor, partner=None):
            position, record = anchor
            payload, label = split.parse(record)
            decoded = {"anchor": to_float(payload)}
            if partner is not None:
                decoded["partner"] = to_float(split.parse(partner)[0])
            images = []
            for name in views:
                image = decoded["partner" if name == "partner" else "anchor"]
                if augment is not None:
                    image = augment(image, view_seed(key, position, VIEW_ID[name]))
                images.append(image)
            return _emit(views, images, label)

        ds = tf.data.Dataset.zip(tuple(streams)) if len(streams) > 1 else streams[0].map(
            lambda p, r: ((p, r),))
        return (ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size, drop_remainder=drop_remainder))

    # Epochs are built eagerly (see per_epoch) and chained; a handful of epochs to a few
    # hundred keeps the chain shallow enough for tf.data.
    epochs = [per_epoch(e) for e in range(int(start_epoch), int(num_epochs))]
    ds = epochs[0] if epochs else per_epoch(int(start_epoch)).take(0)
    for more in epochs[1:]:
        ds = ds.concatenate(more)
    return _deterministic(ds.prefetch(tf.data.AUTOTUNE)), steps


def pair_dataset(images, labels, batch_size, seed, augment=None, epochs=1, *,
                 drop_remainder=False, reshuffle_each_iteration=True) -> tf.data.Dataset:
    """CS-KD pairs from in-memory arrays: yields ``((x, x_partner), y)`` batches.

    ``images``: (N, H, W[, C]) uint8 (scaled to [0, 1]) or float (used as is); ``labels``:
    (N,) ints >= 0. ``augment``: None or ``(image, seed[2]) -> image``. One iteration covers
    ``epochs`` epochs; by default each epoch's last batch may be short, so every example is
    an anchor exactly once per epoch, as in the reference sampler. Each new iteration (e.g.
    each epoch of ``model.fit(ds, epochs=...)``) draws new orders, partners and
    augmentations; a new dataset with the same seed repeats the same sequence.
    """
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) != len(labels) or len(labels) == 0:
        raise DataError(f"pair_dataset needs images (N, H, W[, C]) and N labels, got "
                        f"{images.shape} and {labels.shape}; pass matching arrays")
    if images.dtype != np.uint8 and np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise DataError("pair_dataset: integer images must be in 0..255; pass uint8 or "
                            "float images")
        images = images.astype(np.uint8)
    elif images.dtype != np.uint8:
        images = images.astype(np.float32)
    if labels.min() < 0:
        raise DataError(f"pair_dataset: labels must be >= 0 (got {labels.min()}); remap them")
    order = np.argsort(labels, kind="stable")
    data = tf.constant(images[order])
    counts = np.bincount(labels, minlength=int(labels.max()) + 1)

    def fetch(index):
        return tf.image.convert_image_dtype(tf.gather(data, index), tf.float32)

    ds, _ = memory_pairs(fetch, counts, augment=augment, seed=seed, num_epochs=epochs,
                         batch_size=batch_size, drop_remainder=drop_remainder,
                         reshuffle_each_iteration=reshuffle_each_iteration)
    return ds

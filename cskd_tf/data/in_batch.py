"""In-batch CS-KD pairing (``config.pairing = "in_batch"``): a batch of B images is B/2
same-class pairs, and each image's KL target is its pair-mate's prediction from the same
forward pass (the loss is in :mod:`cskd_tf.losses.methods.cskd`).

Each epoch, for each of ``rounds`` passes (one unless ``steps_per_epoch`` asks for more):

* every class's examples are shuffled and cut into consecutive pairs; a class with an odd
  count pairs its last example with a uniformly random *other* example of the class (which
  so appears a second time, as a mate), a class of one example pairs it with itself;
* the pairs of all classes are shuffled together into one global order.

So every example appears exactly once per pass, plus one extra appearance per odd class.
A pass has ``P = Σ_c ⌈n_c / 2⌉`` pairs, ``2P`` images.

Layout: a batch of ``batch_size`` (B, even) images holds B/2 pairs side by side, images
``2k`` and ``2k + 1`` being mates; both have the same label. Slicing a batch into
consecutive even-sized parts (one per replica, ``distribute.pipeline_dataset``) keeps
every pair within one part. Each image is augmented independently, keyed by (epoch key,
its position ``2p + slot`` in the epoch's global image order, the anchor view).

Batching, sharding and resumption follow :mod:`cskd_tf.data.pairs` with pairs in place of
anchors: with ``drop_remainder`` an epoch is ``⌊P / num_shards / (B/2)⌋`` batches (a few
pairs of each epoch left out), ``steps_per_epoch > 0`` takes that many batches, appending
further independent passes when one is not enough; shard ``s`` of ``W`` keeps global pair
positions ``s, s + W, ...``; everything random is keyed by (seed, epoch), so a run resumed
at ``start_epoch=k`` sees the batches of an uninterrupted run.

Two modes, as for the reference sampler: :func:`memory_in_batch` (exact; stateless ops over
in-memory data) and :func:`stream_in_batch` (per-class TFRecord shards: each class's records
go through a seeded shuffle buffer and are cut into pairs as they come; the global pair
order is exact, a class's stream being picked for each pair by a shuffled list of class
ids; with a bounded ``shuffle_buffer`` the within-class shuffle is approximate).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cskd_tf.data import pairs
from cskd_tf.errors import ConfigError, DataError

ANCHOR = pairs.VIEW_ID["anchor"]
# Fold-in tags that keep this sampler's draws apart from the reference sampler's (0..4).
MEMORY_TAG, STREAM_TAG = 5, 6


def pairs_per_epoch(counts) -> int:
    """P = Σ_c ⌈n_c / 2⌉: the pairs of one pass over the classes."""
    return int(sum((int(c) + 1) // 2 for c in counts))


def check_batch_size(batch_size: int):
    if int(batch_size) < 2 or int(batch_size) % 2:
        raise ConfigError(f"batch_size={batch_size} must be even with in-batch pairing (a "
                          f"batch is B/2 pairs of mates); set --config.batch_size to "
                          f"{max(2, int(batch_size) + 1)}")


def plan(counts, batch_size: int, num_shards: int = 1, steps_per_epoch: int = 0,
         drop_remainder: bool = True):
    """(rounds, pairs per shard per epoch, batches per epoch), ``batch_size`` in images."""
    check_batch_size(batch_size)
    total, per_batch = pairs_per_epoch(counts), int(batch_size) // 2
    if not steps_per_epoch and total // num_shards < (per_batch if drop_remainder else 1):
        raise DataError(f"the training split makes {total} in-batch pairs, fewer than one "
                        f"batch of {per_batch} pairs per each of {num_shards} shard(s); lower "
                        "config.batch_size or set config.steps_per_epoch")
    return pairs.plan(total, per_batch, num_shards, steps_per_epoch, drop_remainder)


def _pair_layout(counts):
    """The static structure of a pass: each pair's class, its two slots into a class-sorted
    list and whether its second slot is an odd class's leftover (to be redrawn)."""
    counts = np.asarray(counts, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_class = (counts + 1) // 2
    pair_class = np.repeat(np.arange(len(counts)), per_class)
    index_in_class = np.concatenate([np.arange(p) for p in per_class]) if len(pair_class) else \
        np.zeros(0, np.int64)
    first = starts[pair_class] + 2 * index_in_class
    leftover = first + 1 >= starts[pair_class] + counts[pair_class]
    return pair_class, first, first + 1, leftover, starts


def mate_offsets(uniform, counts):
    """⌊u · (n_c − 1)⌋ per class: the position of the odd leftover's mate among the other
    ``n_c − 1`` examples of its shuffled class (0, i.e. itself, for a class of one)."""
    counts = np.asarray(counts, np.int64)
    spread = np.maximum(counts - 1, 0)
    offset = tf.cast(tf.floor(uniform * tf.constant(spread, tf.float64)), tf.int64)
    return tf.minimum(offset, tf.constant(np.maximum(spread - 1, 0), tf.int64))


def epoch_pairs(counts, key, *, rounds, length, num_shards=1, shard_index=0):
    """One epoch's pairs on one shard, as indices into class-sorted data.

    Returns a dict of ``length`` rows: key (the epoch key, repeated), position (of the pair
    in the global order), first, second (the two mates) and label.
    """
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    pair_class, first_slot, second_slot, leftover, starts = _pair_layout(counts)
    labels = tf.constant(np.repeat(np.arange(len(counts)), counts), tf.int64)
    base = tf.random.experimental.stateless_fold_in(key, MEMORY_TAG)
    firsts, seconds, classes = [], [], []
    for r in range(rounds):
        round_key = tf.random.experimental.stateless_fold_in(base, r)

        def draw(tag, round_key=round_key):
            return tf.random.experimental.stateless_fold_in(round_key, tag)

        # A uniform permutation stably sorted by class: each class in a uniform order.
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                        seed=draw(0))
        within = tf.gather(perm, tf.argsort(tf.gather(labels, perm), stable=True))
        mate = tf.constant(starts, tf.int64) + mate_offsets(
            tf.random.stateless_uniform([len(counts)], seed=draw(1), dtype=tf.float64), counts)
        second = tf.where(tf.constant(leftover), tf.gather(mate, pair_class), second_slot)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(pair_class), dtype=tf.int64), seed=draw(2))
        firsts.append(tf.gather(tf.gather(within, first_slot), order))
        seconds.append(tf.gather(tf.gather(within, second), order))
        classes.append(tf.gather(tf.constant(pair_class, tf.int64), order))
    position = shard_index + num_shards * tf.range(length, dtype=tf.int64)
    return {"key": tf.tile(key[None], [length, 1]), "position": position,
            "first": tf.gather(tf.concat(firsts, 0), position),
            "second": tf.gather(tf.concat(seconds, 0), position),
            "label": tf.gather(tf.concat(classes, 0), position)}


def _augmented(images, key, position, augment):
    """The two mates, each with its own augmentation (image positions 2p and 2p + 1)."""
    if augment is None:
        return images
    return tuple(augment(image, pairs.view_seed(key, 2 * position + slot, ANCHOR))
                 for slot, image in enumerate(images))


def _side_by_side(first, second, label):
    """A batch of pairs -> images 2k, 2k + 1 the mates of pair k, labels alike."""
    batch = first.shape[0]
    images = tf.stack([first, second], axis=1)
    shape = [2 * batch if batch is not None else -1, *first.shape[1:]]
    if any(d is None for d in shape[1:]):
        shape = tf.concat([[-1], tf.shape(first)[1:]], 0)
    return tf.reshape(images, shape), tf.cast(tf.repeat(label, 2), tf.int32)


def _check_views(views):
    if tuple(views) != ("anchor",):
        raise ConfigError(f"in-batch pairing emits single images (mates side by side), not "
                          f"views {tuple(views)!r}; use views=('anchor',) (method 'cskd' with "
                          "config.pairing='in_batch' asks for that)")


def memory_in_batch(fetch, counts, *, views=("anchor",), augment=None, seed=0, start_epoch=0,
                    num_epochs=1, batch_size=128, num_shards=1, shard_index=0,
                    steps_per_epoch=0, drop_remainder=True, reshuffle_each_iteration=False):
    """The exact in-batch sampler over in-memory class-sorted data (arguments as
    :func:`cskd_tf.data.pairs.memory_pairs`; ``batch_size`` counts images and must be even).

    Returns (dataset of ``(images (B, ...), labels (B,))`` over the epochs, batches per epoch).
    """
    _check_views(views)
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} is not in [0, {num_shards})")
    rounds, length, steps = plan(counts, batch_size, num_shards, steps_per_epoch, drop_remainder)

    def load(e):
        images = _augmented((fetch(e["first"]), fetch(e["second"])), e["key"], e["position"],
                            augment)
        return images[0], images[1], e["label"]

    def per_epoch(key):
        idx = epoch_pairs(counts, key, rounds=rounds, length=length, num_shards=num_shards,
                          shard_index=shard_index)
        return (tf.data.Dataset.from_tensor_slices(idx)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(int(batch_size) // 2, drop_remainder=drop_remainder)
                .map(_side_by_side, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))

    return pairs.over_epochs(per_epoch, seed, start_epoch, num_epochs,
                             reshuffle_each_iteration), steps


def _class_pairs(records, mate_index):
    """A class's shuffled records cut into consecutive pairs; an odd last record is paired
    with the record at ``mate_index`` of the same shuffled order (seen earlier)."""
    def remember(kept, item):
        index, record = item
        kept = tf.where(index == mate_index, record, kept)
        return kept, (record, kept)

    def to_pair(cut, kept):
        # Two records: the pair; one (the leftover): it and the remembered mate.
        return cut[0], tf.concat([cut, kept[:1]], 0)[1]

    return (records.enumerate().scan(tf.constant(b""), remember)
            .batch(2).map(to_pair))


def stream_in_batch(split, *, views=("anchor",), augment=None, seed=0, start_epoch=0,
                    num_epochs=1, batch_size=128, num_shards=1, shard_index=0, steps_per_epoch=0,
                    shuffle_buffer=0, drop_remainder=True):
    """The streaming in-batch sampler over a PreparedSplit's per-class shards.

    Each class's records pass through a shuffle of ``shuffle_buffer // classes`` records (0:
    the whole class, an exact shuffle); the global order of the pairs is exact. As for
    :func:`cskd_tf.data.pairs.stream_pairs`, tf.data's seeded shuffles also depend on a
    global ``tf.random.set_seed``.
    """
    _check_views(views)
    counts = np.asarray(split.counts, np.int64)
    num_classes = len(counts)
    rounds, length, steps = plan(counts, batch_size, num_shards, steps_per_epoch, drop_remainder)
    class_buffers = pairs.class_buffer_sizes(counts, shuffle_buffer)
    pair_class = _pair_layout(counts)[0]

    def to_float(record):
        return tf.image.convert_image_dtype(split.decode(split.parse(record)[0]), tf.float32)

    def one_pass(round_key):
        def draw(tag):
            return tf.random.experimental.stateless_fold_in(round_key, tag)

        # Python ints: Dataset.shuffle needs a concrete seed (see stream_pairs).
        class_seeds = [int(s) for s in tf.random.stateless_uniform(
            [num_classes], seed=draw(0), minval=None, maxval=None, dtype=tf.int64).numpy()]
        mates = mate_offsets(tf.random.stateless_uniform([num_classes], seed=draw(1),
                                                         dtype=tf.float64), counts).numpy()
        streams = []
        for c in range(num_classes):
            if counts[c] == 0:  # no file, and never picked
                streams.append(tf.data.Dataset.from_tensors((b"", b"")).take(0))
                continue
            records = (tf.data.TFRecordDataset(split.class_file(c), buffer_size=pairs.READ_BUFFER)
                       .shuffle(class_buffers[c], seed=class_seeds[c]))
            streams.append(_class_pairs(records, int(mates[c])))
        choice = tf.random.experimental.stateless_shuffle(tf.constant(pair_class, tf.int64),
                                                          seed=draw(2))
        return tf.data.Dataset.choose_from_datasets(
            streams, tf.data.Dataset.from_tensor_slices(choice))

    def per_epoch(epoch):
        key = pairs.epoch_key(seed, epoch)
        base = tf.random.experimental.stateless_fold_in(key, STREAM_TAG)
        passes = [one_pass(tf.random.experimental.stateless_fold_in(base, r))
                  for r in range(rounds)]
        ds = passes[0]
        for more in passes[1:]:
            ds = ds.concatenate(more)

        def load(position, pair):
            first, second = pair
            label = split.parse(first)[1]
            images = _augmented((to_float(first), to_float(second)), key, position, augment)
            return images[0], images[1], label

        return (ds.enumerate().shard(num_shards, shard_index).take(length)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(int(batch_size) // 2, drop_remainder=drop_remainder)
                .map(_side_by_side, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))

    return pairs.chain_epochs(per_epoch, start_epoch, num_epochs), steps

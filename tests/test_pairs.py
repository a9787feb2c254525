"""Invariants of the CS-KD pair sampler (cskd_tf.data.pairs), on tiny synthetic data.

Images encode their own index (pixel value = index), so the stream can be read back as
(anchor index, partner index) pairs.
"""

import numpy as np
import pytest
import tensorflow as tf

from cskd_tf.config import default_config
from cskd_tf.data import pair_dataset, pairs, pipeline, shards, sources
from cskd_tf.errors import DataError

# 24 examples in 4 classes of unequal sizes, deliberately not sorted by class.
LABELS = np.array([0] * 3 + [1] * 5 + [2] * 7 + [3] * 9)[np.random.default_rng(1).permutation(24)]
IMAGES = np.arange(24, dtype=np.float32).reshape(24, 1, 1, 1)


def read_pairs(ds):
    """Flattens ((x, x_partner), y) batches into anchor, partner, label vectors (per batch)."""
    out = []
    for (x, xp), y in ds.as_numpy_iterator():
        out.append((x.reshape(len(y), -1)[:, 0].round().astype(int),
                    xp.reshape(len(y), -1)[:, 0].round().astype(int), y))
    return out


def flat(batches):
    return tuple(np.concatenate([b[i] for b in batches]) for i in range(3))


def test_partner_same_class_and_each_anchor_once_per_epoch():
    batches = read_pairs(pair_dataset(IMAGES, LABELS, batch_size=5, seed=3, epochs=3))
    assert len(batches) == 3 * 5  # ceil(24 / 5) per epoch: the short last batch is kept
    anchors, partners, ys = flat(batches)
    np.testing.assert_array_equal(LABELS[anchors], ys)
    np.testing.assert_array_equal(LABELS[partners], ys)
    orders = anchors.reshape(3, 24)
    for epoch in orders:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(24))
    assert len({tuple(o) for o in orders}) == 3  # a new order every epoch


def test_partners_uniform_within_class_with_replacement():
    labels = np.repeat(np.arange(4), 10)
    images = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1)
    epochs = 60
    anchors, partners, _ = flat(read_pairs(pair_dataset(images, labels, 40, seed=0,
                                                        epochs=epochs)))
    counts = np.bincount(partners, minlength=40).reshape(4, 10)
    expected = epochs  # each class: 10 anchors x 60 epochs over 10 members
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 68.0, chi2  # chi-square, 36 dof, p = 0.001
    # With replacement: the anchor itself is drawn 1/10 of the time.
    self_rate = np.mean(anchors == partners)
    assert abs(self_rate - 0.1) < 0.025, self_rate
    # And partners are not a function of the anchor.
    distinct = [len(set(partners[anchors == a])) for a in range(40)]
    assert min(distinct) >= 5


def test_reproducible_from_seed():
    a = flat(read_pairs(pair_dataset(IMAGES, LABELS, 4, seed=7, epochs=2)))
    b = flat(read_pairs(pair_dataset(IMAGES, LABELS, 4, seed=7, epochs=2)))
    c = flat(read_pairs(pair_dataset(IMAGES, LABELS, 4, seed=8, epochs=2)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_pair_dataset_draws_new_epochs_on_each_iteration():
    # model.fit(ds, epochs=E) iterates the dataset once per epoch: each pass must reshuffle.
    ds = pair_dataset(IMAGES, LABELS, 24, seed=2)
    first, second = flat(read_pairs(ds)), flat(read_pairs(ds))
    assert sorted(second[0]) == list(range(24)) and not np.array_equal(first[0], second[0])
    again = pair_dataset(IMAGES, LABELS, 24, seed=2)
    np.testing.assert_array_equal(flat(read_pairs(again))[1], first[1])
    np.testing.assert_array_equal(flat(read_pairs(again))[1], second[1])
    fixed = pair_dataset(IMAGES, LABELS, 24, seed=2, reshuffle_each_iteration=False)
    np.testing.assert_array_equal(flat(read_pairs(fixed))[0], flat(read_pairs(fixed))[0])


def _noise(image, seed):
    # An "augmentation" that keeps the index readable (floor) but shows the seed used.
    return image + 0.5 * tf.random.stateless_uniform([], seed)


def _index_fetch(index):
    return tf.fill([2, 2, 1], tf.cast(index, tf.float32))


def _memory(counts, **kw):
    ds, steps = pairs.memory_pairs(_index_fetch, counts, augment=_noise, seed=5, **kw)
    return list(ds.as_numpy_iterator()), steps


def test_resume_at_epoch_equals_tail_of_uninterrupted_stream():
    counts = [5, 7, 4]
    full, steps = _memory(counts, num_epochs=4, batch_size=4)
    assert steps == 16 // 4 and len(full) == 4 * steps
    tail, _ = _memory(counts, start_epoch=2, num_epochs=4, batch_size=4)
    assert len(tail) == 2 * steps
    for got, want in zip(tail, full[2 * steps:]):
        np.testing.assert_array_equal(got[0][0], want[0][0])  # augmented anchors
        np.testing.assert_array_equal(got[0][1], want[0][1])  # augmented partners
        np.testing.assert_array_equal(got[1], want[1])


def test_shards_cover_every_example_once_and_agree_with_unsharded():
    counts = np.array([5, 7, 6, 6])  # 24 examples, class-sorted indices 0..23
    labels = np.repeat(np.arange(4), counts)
    single, _ = _memory(counts, num_epochs=2, batch_size=2)
    single_anchor = np.concatenate([b[0][0][:, 0, 0, 0] for b in single]).reshape(2, 24)
    single_partner = np.concatenate([b[0][1][:, 0, 0, 0] for b in single]).reshape(2, 24)
    seen = [[] for _ in range(2)]
    for shard in range(3):
        batches, steps = _memory(counts, num_epochs=2, batch_size=2, num_shards=3,
                                 shard_index=shard, drop_remainder=True)
        assert steps == 4 and len(batches) == 8
        x = np.concatenate([b[0][0][:, 0, 0, 0] for b in batches]).reshape(2, 8)
        xp = np.concatenate([b[0][1][:, 0, 0, 0] for b in batches]).reshape(2, 8)
        for epoch in range(2):
            seen[epoch] += list(np.floor(x[epoch]).astype(int))
            np.testing.assert_array_equal(labels[np.floor(x[epoch]).astype(int)],
                                          labels[np.floor(xp[epoch]).astype(int)])
            # Shard s holds global positions s, s+3, ...: the same draws as one worker.
            np.testing.assert_array_equal(x[epoch], single_anchor[epoch][shard::3])
            np.testing.assert_array_equal(xp[epoch], single_partner[epoch][shard::3])
    for epoch in range(2):
        assert sorted(seen[epoch]) == list(range(24))


def test_steps_per_epoch_beyond_one_pass_appends_new_permutations():
    batches, steps = _memory([4, 6], num_epochs=1, batch_size=4, steps_per_epoch=5)
    assert steps == 5 and len(batches) == 5
    anchors = np.floor(np.concatenate([b[0][0][:, 0, 0, 0] for b in batches])).astype(int)
    assert sorted(anchors[:10]) == list(range(10)) and sorted(anchors[10:]) == list(range(10))


def test_views_and_drop_remainder():
    counts = [6, 5]
    ds, steps = pairs.memory_pairs(_index_fetch, counts, views=("anchor",), augment=_noise,
                                   batch_size=4, num_epochs=1, drop_remainder=True)
    x, y = next(iter(ds))
    assert steps == 2 and x.shape == (4, 2, 2, 1) and y.dtype == tf.int32
    assert len(list(ds)) == 2  # 11 // 4, the remainder dropped
    # By default the short last batch is kept: ceil(11 / 4) batches, the last of 3.
    ds, steps = pairs.memory_pairs(_index_fetch, counts, views=("anchor",), augment=_noise,
                                   batch_size=4, num_epochs=1)
    assert steps == 3 and [len(y) for _, y in ds] == [4, 4, 3]
    with pytest.raises(ValueError, match="sharded pair streams need drop_remainder"):
        pairs.memory_pairs(_index_fetch, counts, batch_size=4, num_shards=2)
    ds, _ = pairs.memory_pairs(_index_fetch, counts, views=("anchor", "partner", "view2"),
                               augment=_noise, batch_size=4, num_epochs=1)
    (a, p, v2), y = next(iter(ds))
    np.testing.assert_array_equal(np.floor(a), np.floor(v2))  # the same image ...
    assert not np.array_equal(a, v2)  # ... augmented independently
    with pytest.raises(ValueError):
        pairs.memory_pairs(_index_fetch, counts, views=("anchor", "mixup"))
    with pytest.raises(DataError):
        pairs.memory_pairs(_index_fetch, counts, batch_size=64, drop_remainder=True)


def test_pair_dataset_uint8_and_augment():
    images = np.full((6, 4, 4), 255, np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    flips = []

    def augment(image, seed):
        flips.append(1)
        return tf.image.stateless_random_flip_left_right(image, seed)

    (x, xp), y = next(iter(pair_dataset(images, labels, 3, seed=0, augment=augment)))
    assert x.shape == (3, 4, 4, 1) and x.dtype == tf.float32
    assert float(tf.reduce_max(x)) == 1.0 and flips
    with pytest.raises(DataError):
        pair_dataset(images, labels[:5], 3, seed=0)


class IndexSource(sources.Source):
    """Train images whose single pixel value is their index (for the stream-mode tests)."""

    name = "index"
    channels = 1
    default_image_size = 2
    default_augment = "none"

    def __init__(self, counts):
        super().__init__("")
        self.counts = counts

    def fingerprint(self):
        return str(self.counts)

    def has_val(self):
        return True

    def load(self):
        labels = np.repeat(np.arange(len(self.counts)), self.counts)
        images = np.repeat(np.arange(len(labels), dtype=np.uint8), 4).reshape(-1, 2, 2, 1)
        split = sources.SplitData(labels=labels, images=images)
        return sources.Listing(class_names=[str(c) for c in range(len(self.counts))],
                               splits={"train": split, "val": split})


@pytest.fixture
def index_split(tmp_path):
    counts = [5, 7, 6, 6]
    _, splits = shards.prepare_cache(IndexSource(counts), cache_dir=str(tmp_path))
    info = pipeline.DatasetInfo(name="index", num_classes=4, class_names=list("0123"),
                                image_shape=(2, 2, 1), mean=(0.5,), std=(0.5,),
                                splits={"train": 24}, train_counts=np.array(counts),
                                augment="none")
    return info, splits["train"], np.repeat(np.arange(4), counts)


def _config(**kw):
    config = default_config()
    config.update({"num_epochs": 3, "batch_size": 4, "seed": 1, **kw})
    return config


def _read_index_batches(ds):
    out = []
    for (x, xp), y in ds.as_numpy_iterator():
        out.append((np.round(x[:, 0, 0, 0] * 255).astype(int),
                    np.round(xp[:, 0, 0, 0] * 255).astype(int), y))
    return out


@pytest.mark.parametrize("mode", ["stream", "memory"])
def test_cached_split_pairs(index_split, mode):
    info, split, labels = index_split
    config = _config(pair_mode=mode, shuffle_buffer=0)
    ds, steps = pipeline.train_dataset(config, info, split)
    batches = _read_index_batches(ds)
    assert steps == 6 and len(batches) == 18
    anchors, partners, ys = flat(batches)
    np.testing.assert_array_equal(labels[anchors], ys)
    np.testing.assert_array_equal(labels[partners], ys)
    for epoch in anchors.reshape(3, 24):
        assert sorted(epoch) == list(range(24))
    again = flat(_read_index_batches(pipeline.train_dataset(config, info, split)[0]))
    np.testing.assert_array_equal(again[1], partners)
    tail = flat(_read_index_batches(pipeline.train_dataset(config, info, split,
                                                           start_epoch=1)[0]))
    np.testing.assert_array_equal(tail[0], anchors[24:])
    np.testing.assert_array_equal(tail[1], partners[24:])
    # Two shards, two images per batch each: every example once per epoch across them.
    seen = []
    for shard in range(2):
        ds, steps = pipeline.train_dataset(config, info, split, num_shards=2, shard_index=shard,
                                           batch_size=2)
        a, p, y = flat(_read_index_batches(ds))
        np.testing.assert_array_equal(labels[p], y)
        seen.append(a.reshape(3, 12))
    for epoch in range(3):
        assert sorted(np.concatenate([s[epoch] for s in seen])) == list(range(24))


def test_stream_views(index_split):
    info, split, labels = index_split
    config = _config(pair_mode="stream", num_epochs=1, shuffle_buffer=8)
    ds, steps = pipeline.train_dataset(config, info, split, views=("anchor",))
    xs, ys = zip(*ds.as_numpy_iterator())
    anchors = np.round(np.concatenate(xs)[:, 0, 0, 0] * 255).astype(int)
    assert sorted(anchors) == list(range(24))
    np.testing.assert_array_equal(labels[anchors], np.concatenate(ys))
    ds, _ = pipeline.train_dataset(config, info, split, views=("anchor", "view2", "partner"))
    (a, v2, p), y = next(iter(ds))
    np.testing.assert_array_equal(a, v2)  # augment "none": the same image twice
    np.testing.assert_array_equal(labels[np.round(p[:, 0, 0, 0] * 255).astype(int)], y)


@pytest.mark.parametrize("pair_mode", ["memory", "stream"])
def test_training_pipeline_keeps_the_last_partial_batch(pair_mode, tmp_path):
    """config -> data.train_dataset: every example an anchor exactly once per epoch,
    the remainder included, in ceil(N / B) steps (as the reference's DataLoader)."""
    from cskd_tf.training import fit_setup

    config = default_config()
    config.update(dataset="digits", max_train_per_class=3, augment="none", batch_size=8,
                  num_epochs=2, pair_mode=pair_mode, cache_dir=str(tmp_path), seed=4)
    info, splits = pipeline.prepare(config)
    payloads, labels = splits["train"].load()
    n = len(labels)
    assert n == 30 and n % config.batch_size  # 30 = 3 full batches of 8 and one of 6
    steps = fit_setup.steps_per_epoch(config, info)
    assert steps == -(-n // config.batch_size) == 4
    ds, data_steps = pipeline.train_dataset(config, info, splits["train"])
    assert data_steps == steps
    batches = list(ds.as_numpy_iterator())
    assert [len(y) for _, y in batches] == [8, 8, 8, 6] * 2
    everything = sorted(bytes(p) for p in payloads)
    for epoch in range(2):
        keys = [np.round(a * 255).astype(np.uint8).tobytes()
                for (x, _), _ in batches[epoch * steps:(epoch + 1) * steps] for a in x]
        assert sorted(keys) == everything  # each example an anchor exactly once
    # Multi-replica training keeps full batches only (training/distribute.py).
    assert fit_setup.steps_per_epoch(config, info, drop_remainder=True) == 3
    _, dropped = pipeline.train_dataset(config, info, splits["train"], drop_remainder=True)
    assert dropped == 3


"""In-batch pairing (config.pairing="in_batch"): the loss, the sampler, the wiring.

Sampler images encode their own class-sorted index (pixel value = index), so a stream can
be read back as indices; mates sit at positions 2k, 2k + 1 of every batch.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cskd_tf import losses
from cskd_tf.config import default_config, validate
from cskd_tf.data import in_batch, pair_dataset, pipeline
from cskd_tf.errors import ConfigError
from test_pairs import index_data

T = 4.0


class FixedLogits:
    """The part of CSKDModel a method's loss uses, returning fixed (variable) logits."""

    def __init__(self, logits, lambda_cls=0.7):
        self.logits = tf.Variable(logits)
        self.lambda_cls = tf.constant(lambda_cls)

    def forward(self, x, training=False):
        return {"logits": self.logits * 1.0}


def np_log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_in_batch_loss(logits, labels, weights, lam):
    """mean_i w_i CE_i + λ T² mean_i w_i KL(softmax(z_mate(i)/T) ‖ softmax(z_i/T))."""
    mates = logits.reshape(-1, 2, logits.shape[1])[:, ::-1].reshape(logits.shape)
    ce = -np_log_softmax(logits)[np.arange(len(labels)), labels]
    log_p, log_q = np_log_softmax(logits / T), np_log_softmax(mates / T)
    kl = np.sum(np.exp(log_q) * (log_q - log_p), axis=1)
    ce, cls = np.mean(weights * ce), T * T * np.mean(weights * kl)
    return ce + lam * cls, ce, cls


def in_batch_method():
    config = default_config()
    config.pairing = "in_batch"
    return losses.get_method("cskd", config)


@pytest.fixture
def fixed():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(8, 5)) * 3).astype(np.float32)
    labels = np.array([0, 0, 3, 3, 1, 1, 4, 4])
    return logits, labels


def test_method_views_config_and_no_extra_forward_pass(fixed):
    method = in_batch_method()
    assert method.views == ("anchor",) and method.terms == ("ce", "cls")
    assert method.get_config() == {"name": "cskd", "temperature": T, "pairing": "in_batch"}
    assert type(method)(temperature=T, pairing="in_batch").views == ("anchor",)
    reference = losses.get_method("cskd", default_config())
    assert reference.views == ("anchor", "partner") and reference.pairing == "reference"
    calls = []

    class Counting(FixedLogits):
        def forward(self, x, training=False):
            calls.append(training)
            return super().forward(x, training)

    model = Counting(fixed[0])
    assert method.detached_outputs(model, (tf.zeros([8, 1]),), fixed[1]) == {}
    method.loss(model, (tf.zeros([8, 1]),), fixed[1], {})
    assert calls == [True]  # one forward pass per step, in training mode


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_matches_numpy_and_every_image_gets_ce(fixed, weighted):
    logits, labels = fixed
    weights = np.linspace(0.2, 1.8, 8) if weighted else np.ones(8)
    detached = {"sample_weight": tf.constant(weights, tf.float32)} if weighted else {}
    model = FixedLogits(logits)
    total, out_logits, terms = in_batch_method().loss(model, (tf.zeros([8, 1]),), labels,
                                                       detached)
    want_total, want_ce, want_cls = np_in_batch_loss(logits, labels, weights, 0.7)
    assert float(terms["ce"]) == pytest.approx(want_ce, rel=1e-5)
    assert float(terms["cls"]) == pytest.approx(want_cls, rel=1e-4)
    assert float(total) == pytest.approx(want_total, rel=1e-4)
    np.testing.assert_array_equal(out_logits.numpy(), logits)  # metrics see all B images
    # The CE term is the plain mean CE over all B logits (no image is only a target).
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    if not weighted:
        assert float(terms["ce"]) == pytest.approx(float(plain), rel=1e-5)


def test_kl_targets_are_the_detached_mates(fixed):
    logits, labels = fixed
    model = FixedLogits(logits)
    with tf.GradientTape() as tape:
        _, _, terms = in_batch_method().loss(model, (tf.zeros([8, 1]),), labels, {})
    grad = tape.gradient(terms["cls"], model.logits).numpy()
    # d/dz_i of T² · mean_i KL(q_mate(i) ‖ p_i) with q held fixed: T / B · (p_i − q_mate(i)).
    # A gradient through the targets would add terms in the mates' rows.
    p = np.exp(np_log_softmax(logits / T))
    q = p.reshape(-1, 2, 5)[:, ::-1].reshape(8, 5)
    np.testing.assert_allclose(grad, T / 8 * (p - q), rtol=1e-4, atol=1e-6)
    # Rows 2k and 2k + 1 swapped.
    from cskd_tf.losses.methods.cskd import pair_mates
    np.testing.assert_array_equal(pair_mates(tf.constant(logits)).numpy(), logits[[1, 0, 3, 2,
                                                                                  5, 4, 7, 6]])


# ------------------------------------------------------------------------------- sampler
COUNTS = [5, 4, 1, 3, 6]  # odd classes: 0, 2 (a single example), 3
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)
STARTS = np.concatenate([[0], np.cumsum(COUNTS)[:-1]])


def _noise(image, seed):
    # An "augmentation" that keeps the index readable (floor) and shows the seed used.
    return image + 0.5 * tf.random.stateless_uniform([], seed)


def _fetch(index):
    return tf.fill([2, 2, 1], tf.cast(index, tf.float32))


def _memory(**kw):
    kw = {"batch_size": 4, "seed": 3, **kw}
    ds, steps = in_batch.memory_in_batch(_fetch, COUNTS, augment=_noise, **kw)
    return [(x[:, 0, 0, 0], y) for x, y in ds.as_numpy_iterator()], steps


def _pairs_of(batches):
    """(first, second) index pairs and their labels over the batches."""
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    idx = np.floor(x).astype(int)
    return idx.reshape(-1, 2), y.reshape(-1, 2)


def check_epoch(pair_idx, pair_y, counts=COUNTS):
    labels = np.repeat(np.arange(len(counts)), counts)
    np.testing.assert_array_equal(pair_y[:, 0], pair_y[:, 1])  # one label per pair ...
    np.testing.assert_array_equal(labels[pair_idx], pair_y)  # ... the class of both mates
    appearances = np.bincount(pair_idx.ravel(), minlength=len(labels))
    odd = [c for c, n in enumerate(counts) if n % 2]
    assert appearances.sum() == len(labels) + len(odd)
    assert (appearances >= 1).all()  # every example at least once ...
    for c in range(len(counts)):  # ... and exactly one extra per odd class, as a mate
        extra = appearances[labels == c].sum() - counts[c]
        assert extra == (1 if c in odd else 0), (c, appearances)
        members = np.flatnonzero(labels == c)
        class_pairs = pair_idx[labels[pair_idx[:, 0]] == c]
        if counts[c] == 1:  # a class of one: paired with itself
            assert class_pairs.tolist() == [[members[0], members[0]]]
        else:  # otherwise a mate is always another example
            assert (class_pairs[:, 0] != class_pairs[:, 1]).all()


def test_every_pair_same_class_and_every_example_once_per_epoch():
    batches, steps = _memory(num_epochs=3, drop_remainder=False)
    pairs_per_epoch = in_batch.pairs_per_epoch(COUNTS)
    assert pairs_per_epoch == 3 + 2 + 1 + 2 + 3
    assert steps == -(-pairs_per_epoch // 2) and len(batches) == 3 * steps
    idx, y = _pairs_of(batches)
    epochs = [idx[e * pairs_per_epoch:(e + 1) * pairs_per_epoch] for e in range(3)]
    for e in range(3):
        check_epoch(epochs[e], y[e * pairs_per_epoch:(e + 1) * pairs_per_epoch])
    assert len({tuple(map(tuple, p)) for p in epochs}) == 3  # new pairs every epoch
    # Each image has its own augmentation: the two copies of the single example differ.
    x = np.concatenate([b[0] for b in batches]).reshape(-1, 2)
    alone = STARTS[2]
    both = x[np.floor(x[:, 0]).astype(int) == alone]
    assert len(both) == 3 and (both[:, 0] != both[:, 1]).all()


def test_the_leftover_mate_is_a_uniform_other_classmate():
    # One class of 5: three pairs per epoch, one batch of 6 images; 300 epochs.
    ds, _ = in_batch.memory_in_batch(_fetch, [5], batch_size=6, num_epochs=300)
    seen = []
    for x, _ in ds.as_numpy_iterator():
        idx = x[:, 0, 0, 0].astype(int)
        appearances = np.bincount(idx, minlength=5)
        assert sorted(appearances) == [1, 1, 1, 1, 2]
        seen.append(int(np.flatnonzero(appearances == 2)[0]))
        pairs = idx.reshape(-1, 2)
        assert not (pairs[:, 0] == pairs[:, 1]).any()
    assert len(seen) == 300
    counts = np.bincount(seen, minlength=5)
    chi2 = ((counts - 60) ** 2 / 60).sum()
    assert chi2 < 18.5, counts  # chi-square, 4 dof, p = 0.001


def test_drop_remainder_steps_and_plan_agree():
    batches, steps = _memory(num_epochs=1, batch_size=4)  # 11 pairs, 2 per batch
    assert steps == 5 and len(batches) == 5 and all(len(b[1]) == 4 for b in batches)
    assert in_batch.plan(COUNTS, 4)[2] == 5
    batches, steps = _memory(num_epochs=1, batch_size=6, steps_per_epoch=8)  # 24 > 11 pairs
    assert steps == 8 and len(batches) == 8
    idx, y = _pairs_of(batches)
    check_epoch(idx[:11], y[:11])
    check_epoch(idx[11:22], y[11:22])  # a second, independent pass


def test_resume_and_shards_reproduce_the_uninterrupted_global_order():
    full, steps = _memory(num_epochs=3)
    tail, _ = _memory(start_epoch=1, num_epochs=3)
    assert len(tail) == 2 * steps
    for got, want in zip(tail, full[steps:]):
        np.testing.assert_array_equal(got[0], want[0])  # same images, same augmentations
        np.testing.assert_array_equal(got[1], want[1])
    # Two shards of one pair per batch each: shard s holds global pair positions s, s+2, ...
    single, _ = _memory(num_epochs=1, batch_size=2, drop_remainder=False)
    single_x = np.concatenate([b[0] for b in single]).reshape(-1, 2)[:10]
    for shard in range(2):
        part, part_steps = _memory(num_epochs=1, batch_size=2, num_shards=2, shard_index=shard)
        assert part_steps == 5
        np.testing.assert_array_equal(np.concatenate([b[0] for b in part]).reshape(-1, 2),
                                      single_x[shard::2])


@pytest.fixture
def index_split(tmp_path):
    counts = [5, 7, 6, 1]
    return (*index_data(tmp_path, counts), counts)


def _read(ds):
    out = [(np.round(x[:, 0, 0, 0] * 255).astype(int), y) for x, y in ds.as_numpy_iterator()]
    return np.concatenate([o[0] for o in out]).reshape(-1, 2), \
        np.concatenate([o[1] for o in out]).reshape(-1, 2)


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_train_dataset_in_batch_both_modes(index_split, mode):
    from cskd_tf.training import fit_setup

    info, split, counts = index_split
    config = default_config()
    config.update(dict(pairing="in_batch", pair_mode=mode, num_epochs=2, batch_size=4, seed=1,
                       shuffle_buffer=0))
    ds, steps = pipeline.train_dataset(config, info, split)  # views default to ("anchor",)
    pairs_per_epoch = in_batch.pairs_per_epoch(counts)  # 3 + 4 + 3 + 1 = 11
    assert steps == fit_setup.steps_per_epoch(config, info) == pairs_per_epoch // 2
    idx, y = _read(ds)
    assert len(idx) == 2 * steps * 2
    labels = np.repeat(np.arange(4), counts)
    np.testing.assert_array_equal(labels[idx], y)
    config.update(dict(batch_size=2))
    whole, _ = _read(pipeline.train_dataset(config, info, split)[0])  # 11 pairs: none dropped
    check_epoch(whole[:11], labels[whole[:11]], counts)
    check_epoch(whole[11:], labels[whole[11:]], counts)
    again, _ = _read(pipeline.train_dataset(config, info, split, start_epoch=1)[0])
    np.testing.assert_array_equal(again, whole[11:])
    for shard in range(2):  # shard s: global pair positions s, s + 2, ... (5 per epoch)
        part, _ = _read(pipeline.train_dataset(config, info, split, num_shards=2,
                                               shard_index=shard, batch_size=2)[0])
        np.testing.assert_array_equal(part[:5], whole[shard:10:2])
    config.update(dict(steps_per_epoch=7, num_epochs=1))  # beyond one pass of 11 pairs
    ds, steps = pipeline.train_dataset(config, info, split)
    longer, _ = _read(ds)
    assert steps == 7 and len(longer) == 7
    config.update(dict(steps_per_epoch=13))
    longer, _ = _read(pipeline.train_dataset(config, info, split)[0])
    assert len(longer) == 13
    check_epoch(longer[:11], labels[longer[:11]], counts)  # one whole pass, then the next
    check_epoch(longer[:11], labels[longer[:11]], counts)


# ---------------------------------------------------------------------- Keras and errors
def test_pair_dataset_in_batch_trains_a_keras_model():
    from cskd_tf.models import CSKDModel

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [5, 4, 3])
    images = rng.uniform(0, 1, (12, 4, 4, 1)).astype(np.float32) + labels[:, None, None, None]
    ds = pair_dataset(images, labels, batch_size=4, seed=0, pairing="in_batch")
    x, y = next(iter(ds))
    assert x.shape == (4, 4, 4, 1) and y.shape == (4,)
    np.testing.assert_array_equal(y.numpy()[0::2], y.numpy()[1::2])
    backbone = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(3)])
    method = losses.METHODS["cskd"](temperature=4.0, pairing="in_batch")
    model = CSKDModel(backbone, method=method)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(ds, epochs=2, verbose=0)
    assert np.isfinite(history.history["cls"]).all() and history.history["cls"][0] > 0
    with pytest.raises(ConfigError, match="batch_size=5 must be even"):
        pair_dataset(images, labels, batch_size=5, seed=0, pairing="in_batch")


def test_pairs_from_dataset_in_batch(tmp_path):
    from cskd_tf.data import pairs_from_dataset

    # Image i is constant i, label i % 3: classes of 5, 4 and 4 examples (7 pairs).
    images = np.repeat(np.arange(13, dtype=np.uint8), 4 * 4).reshape(13, 4, 4, 1)
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(13) % 3))
    stream = pairs_from_dataset(ds, batch_size=4, seed=0, cache_dir=str(tmp_path),
                                pairing="in_batch")
    assert stream.steps_per_epoch == 4  # ⌈7 pairs / 2 per batch⌉: the last batch is short
    x = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in stream]).round().astype(int)
    pairs = x.reshape(-1, 2)
    assert len(pairs) == 7 and (pairs[:, 0] % 3 == pairs[:, 1] % 3).all()
    assert sorted(set(x)) == list(range(13)) and len(x) == 14  # one extra: class 0 is odd
    with pytest.raises(ConfigError, match="views"):
        pairs_from_dataset(ds, batch_size=4, seed=0, cache_dir=str(tmp_path),
                           pairing="in_batch", views=("anchor", "partner"))


def test_bad_inputs_are_one_line_config_errors():
    config = default_config()
    config.update(dict(pairing="in_batch", batch_size=33))
    with pytest.raises(ConfigError, match="batch_size=33 must be even") as error:
        validate(config)
    assert "\n" not in str(error.value)
    config.update(dict(batch_size=32, method="ce"))
    with pytest.raises(ConfigError, match=r"not supported by method 'ce' \(methods that take "
                                          r"it: cskd\)"):
        losses.get_method("ce", config)
    with pytest.raises(ConfigError, match="must be even"):
        in_batch.memory_in_batch(_fetch, COUNTS, batch_size=7)
    with pytest.raises(ConfigError, match="views"):
        in_batch.memory_in_batch(_fetch, COUNTS, views=("anchor", "partner"))
    with pytest.raises(ConfigError, match="pairing='sideways' is not one of"):
        losses.METHODS["cskd"](temperature=4.0, pairing="sideways")
    config.pairing = "sideways"
    with pytest.raises(ConfigError, match="config.pairing='sideways' is not one of"):
        validate(config)


def test_odd_replica_slices_are_refused():
    from cskd_tf.training import distribute

    class Placement:
        num_replicas = 4

    distribute.check_global_batch(Placement, 12)  # reference pairing: 3 each is fine
    with pytest.raises(ConfigError, match="3 images, an odd number.*batch_size to 8"):
        distribute.check_global_batch(Placement, 12, "in_batch")
    distribute.check_global_batch(Placement, 16, "in_batch")


def test_trainer_end_to_end_and_model_keras_keeps_the_pairing(tiny_config, tmp_path):
    from cskd_tf.training.trainer import train

    tiny_config.update(dict(pairing="in_batch", num_epochs=1))
    workdir = tmp_path / "run"
    metrics = train(tiny_config, str(workdir))
    assert 0 <= metrics["test"]["top1_error"] <= 100
    header = (workdir / "history.csv").read_text().splitlines()[0].split(",")
    assert "cls" in header
    model = keras.models.load_model(str(workdir / "model.keras"))
    assert model.method.pairing == "in_batch" and model.method.views == ("anchor",)
    assert json.loads((workdir / "config.json").read_text())["pairing"] == "in_batch"
    # A method that does not pair in-batch is refused before anything is written.
    tiny_config.method = "ce"
    with pytest.raises(ConfigError, match="methods that take it: cskd"):
        train(tiny_config, str(tmp_path / "ce"))
    assert not os.path.exists(tmp_path / "ce")


def test_report_keeps_in_batch_runs_apart(tmp_path):
    from cskd_tf import config as config_lib
    from cskd_tf.evaluation import report

    metrics = {"top1_error": 20.0, "top5_error": 5.0, "ece": 3.0, "recall_at_1": 80.0,
               "nll": 1.0, "num_examples": 100}
    for name, pairing in [("ref", "reference"), ("inb", "in_batch")]:
        config = json.loads(config_lib.to_json(default_config()))
        config["pairing"] = pairing
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        (tmp_path / name / "metrics.json").write_text(json.dumps({"test": metrics}))
    text = report.build_report([str(tmp_path)])
    assert "CS-KD (pairing=in_batch)" in text and "differ" not in text
    assert "pairing" not in report._FREE_FIELDS

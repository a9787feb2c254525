"""Tests of cskd_tf.evaluation against independent references.

References: python loops over bins (ECE), sklearn's cosine_similarity with a
stable sort (recall@k), sklearn's top_k_accuracy_score and log_loss.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from sklearn.metrics import log_loss, top_k_accuracy_score
from sklearn.metrics.pairwise import cosine_similarity

from cskd_tf import evaluation as M
from cskd_tf.evaluation import metrics as numpy_metrics


def random_logits(rng, n, c, scale=3.0):
    return (rng.normal(size=(n, c)) * scale).astype(np.float32)


def probs_from(logits):
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- references


def ece_loop(probs, labels, num_bins):
    """Guo et al. (2017) Eq. 3, one bin and one sample at a time."""
    n = len(labels)
    total = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        members = []
        for i in range(n):
            conf = max(probs[i])
            if lo < conf <= hi or (b == 0 and conf == 0.0):
                members.append(i)
        if not members:
            continue
        acc = sum(int(np.argmax(probs[i]) == labels[i]) for i in members) / len(members)
        conf = sum(max(probs[i]) for i in members) / len(members)
        total += len(members) / n * abs(acc - conf)
    return total


def recall_brute(features, labels, k):
    """Every pair by sklearn; neighbours by a stable sort (ties: lower index)."""
    sim = cosine_similarity(np.asarray(features, np.float64))
    n = len(labels)
    hits = 0
    for i in range(n):
        order = [j for j in np.argsort(-sim[i], kind="stable") if j != i][:k]
        hits += any(labels[j] == labels[i] for j in order)
    return hits / n


# ----------------------------------------------------------------------- ECE


@pytest.mark.parametrize("num_bins", [1, 5, 15])
def test_ece_matches_loop_reference(num_bins):
    rng = np.random.default_rng(num_bins)
    probs = probs_from(random_logits(rng, 200, 6))
    labels = rng.integers(0, 6, 200)
    got = M.expected_calibration_error(probs, labels, num_bins)
    assert got == pytest.approx(ece_loop(probs, labels, num_bins), abs=1e-12)


def test_ece_hand_computed():
    probs = np.array(
        [
            [0.90, 0.10, 0.00],  # conf .90, correct
            [0.20, 0.80, 0.00],  # conf .80, wrong
            [0.60, 0.40, 0.00],  # conf .60, correct
            [0.45, 0.55, 0.00],  # conf .55, correct
            [0.30, 0.40, 0.30],  # conf .40, wrong -> bin (0, .5]
        ]
    )
    labels = np.array([0, 0, 0, 1, 2])
    # bin (.5, 1]: acc 3/4, conf 2.85/4 -> 4/5 * .0375 = .03
    # bin (0, .5]: acc 0, conf .4     -> 1/5 * .4    = .08
    assert M.expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(0.11)
    bins = M.reliability_bins(probs, labels, num_bins=2)
    np.testing.assert_array_equal(bins.counts, [1, 4])
    np.testing.assert_allclose(bins.accuracy, [0.0, 0.75])
    np.testing.assert_allclose(bins.confidence, [0.4, 0.7125])
    np.testing.assert_allclose(bins.edges, [0.0, 0.5, 1.0])


def test_ece_bin_edges_are_right_closed():
    # conf exactly 3/15 = 0.2 belongs to (2/15, 3/15], i.e. bin 2; 1.0 to the last.
    probs = np.array([[0.2] * 5, [1.0, 0.0, 0.0, 0.0, 0.0]])
    bins = M.reliability_bins(probs, [0, 0], num_bins=15)
    assert bins.counts[2] == 1 and bins.counts[14] == 1 and bins.counts.sum() == 2


def test_ece_perfectly_calibrated_is_zero():
    # Every sample at confidence 0.8, exactly 80% of them correct.
    probs = np.tile([0.8, 0.1, 0.1], (10, 1))
    labels = np.array([0] * 8 + [1, 2])
    assert M.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_synthetic_calibrated_is_small():
    # The predicted class is right with probability equal to its confidence.
    rng = np.random.default_rng(0)
    n, c = 100_000, 10
    conf = rng.uniform(0.1, 1.0, n)
    pred = rng.integers(0, c, n)
    probs = np.repeat(((1 - conf) / (c - 1))[:, None], c, axis=1)
    probs[np.arange(n), pred] = conf
    correct = rng.uniform(size=n) < conf
    labels = np.where(correct, pred, (pred + rng.integers(1, c, n)) % c)
    assert M.expected_calibration_error(probs, labels) < 0.01
    # Overconfident by construction: confidence 1 on the same predictions.
    sharp = np.eye(c)[pred]
    assert M.expected_calibration_error(sharp, labels) > 0.3


# ------------------------------------------------------------------ recall@k


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recall_matches_brute_force(k, dtype):
    rng = np.random.default_rng(k)
    features = rng.normal(size=(120, 8)).astype(dtype)
    labels = rng.integers(0, 5, 120)
    assert M.recall_at_k(features, labels, k) == pytest.approx(recall_brute(features, labels, k))


def test_recall_in_several_blocks(monkeypatch):
    # Force 7-row query blocks: the result must not depend on the blocking.
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 4))
    labels = rng.integers(0, 3, 50)
    expected = recall_brute(features, labels, 2)
    monkeypatch.setattr(numpy_metrics, "_RECALL_BLOCK_ENTRIES", 7 * 50)
    assert M.recall_at_k(features, labels, 2) == pytest.approx(expected)


def test_recall_excludes_the_query():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(20, 5))
    features = np.concatenate([base, base])  # every point has an exact duplicate
    # Duplicate has another label: if the query were its own neighbour, R@1 = 1.
    assert M.recall_at_k(features, np.arange(40), 1) == 0.0
    # Duplicate has the same label: the duplicate is the nearest neighbour.
    assert M.recall_at_k(features, np.tile(np.arange(20), 2), 1) == 1.0


def test_recall_ties_go_to_lower_index():
    # Three exact directions: similarities are exactly 0 or 1, many ties.
    directions = np.eye(3)[[0, 0, 0, 1, 1, 2, 2, 2, 0, 1]] * np.arange(1, 11)[:, None]
    labels = np.array([0, 1, 1, 2, 0, 1, 2, 2, 0, 0])
    for k in (1, 2, 3, 4):
        assert M.recall_at_k(directions, labels, k) == pytest.approx(
            recall_brute(directions, labels, k)
        ), k
    # All points identical, so every neighbour list is in index order: only
    # query 3 (label 0, nearest 0) hits at k = 1.
    same = np.ones((4, 2))
    assert M.recall_at_k(same, [0, 1, 1, 0], 1) == pytest.approx(1 / 4)
    expected = recall_brute(same, [0, 1, 1, 0], 2)
    assert M.recall_at_k(same, [0, 1, 1, 0], 2) == pytest.approx(expected)


def test_recall_zero_vector_is_not_nan():
    features = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    assert M.recall_at_k(features, [0, 1, 1], 1) == pytest.approx(2 / 3)


@pytest.mark.parametrize("k", [0, -1, 5, 6, 1.0, True])
def test_recall_bad_k(k):
    with pytest.raises(ValueError):
        M.recall_at_k(np.ones((5, 3)), np.zeros(5, int), k)


# --------------------------------------------------------- top-k error, NLL


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_error_matches_sklearn(k):
    rng = np.random.default_rng(k)
    logits = random_logits(rng, 300, 10)
    labels = rng.integers(0, 10, 300)
    expected = 1 - top_k_accuracy_score(labels, logits, k=k, labels=np.arange(10))
    assert M.top_k_error(logits, labels, k) == pytest.approx(expected)
    assert M.top_k_error(probs_from(logits), labels, k) == pytest.approx(expected)


def test_top_k_error_ties_go_to_lower_class():
    scores = np.zeros((3, 4))
    labels = np.array([0, 1, 3])
    assert M.top_k_error(scores, labels, 1) == pytest.approx(2 / 3)
    assert M.top_k_error(scores, labels, 2) == pytest.approx(1 / 3)
    assert M.top_k_error(scores, labels, 4) == 0.0


def test_nll_matches_sklearn_log_loss():
    rng = np.random.default_rng(3)
    probs = probs_from(random_logits(rng, 200, 7))
    labels = rng.integers(0, 7, 200)
    expected = log_loss(labels, probs, labels=np.arange(7))
    assert M.negative_log_likelihood(probs, labels) == pytest.approx(expected, rel=1e-10)


def test_nll_clips_zero_probability():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    expected = (-np.log(1e-12) - np.log(0.5)) / 2
    assert M.negative_log_likelihood(probs, [1, 0]) == pytest.approx(expected)


# ------------------------------------------------------- evaluate_predictions


def test_evaluate_predictions():
    rng = np.random.default_rng(4)
    logits = random_logits(rng, 150, 8)
    labels = rng.integers(0, 8, 150)
    features = rng.normal(size=(150, 6))
    out = M.evaluate_predictions(logits, labels, features)
    assert set(out) == {"top1_error", "top5_error", "ece", "recall_at_1", "nll"}
    probs = probs_from(logits)
    assert out["top1_error"] == pytest.approx(100 * M.top_k_error(logits, labels, 1))
    assert out["top5_error"] == pytest.approx(100 * M.top_k_error(logits, labels, 5))
    assert out["ece"] == pytest.approx(100 * ece_loop(probs, labels, 15))
    assert out["recall_at_1"] == pytest.approx(100 * recall_brute(features, labels, 1))
    assert out["nll"] == pytest.approx(log_loss(labels, probs, labels=np.arange(8)))
    # Huge logits: the softmax must stay finite.
    assert np.isfinite(M.evaluate_predictions(logits * 1e4, labels)["nll"])


def test_evaluate_predictions_few_classes_no_features():
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
    out = M.evaluate_predictions(logits, [0, 1])
    assert out["top1_error"] == pytest.approx(50.0)
    assert out["top5_error"] == 0.0  # k = min(5, 3) = 3 classes
    assert out["recall_at_1"] is None


# ----------------------------------------------------------------- bad input

GOOD_P = np.full((4, 3), 1 / 3)
GOOD_Y = np.array([0, 1, 2, 0])


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.expected_calibration_error(GOOD_P, [0, 1, 3, 0]),  # label >= C
        lambda: M.expected_calibration_error(GOOD_P, [0, 1, -1, 0]),  # label < 0
        lambda: M.expected_calibration_error(GOOD_P, [0, 1, 2]),  # length mismatch
        lambda: M.expected_calibration_error(GOOD_P[0], GOOD_Y),  # 1-D probs
        lambda: M.expected_calibration_error(np.where(np.eye(4, 3) > 0, np.nan, GOOD_P), GOOD_Y),
        lambda: M.expected_calibration_error(GOOD_P * 4, GOOD_Y),  # not probabilities
        lambda: M.expected_calibration_error(GOOD_P, GOOD_Y, num_bins=0),
        lambda: M.expected_calibration_error(GOOD_P, [0.5, 1, 2, 0]),  # non-integer label
        lambda: M.negative_log_likelihood(GOOD_P, [0, 1, 2, 7]),
        lambda: M.top_k_error(GOOD_P, GOOD_Y, 4),  # k > C
        lambda: M.top_k_error(np.full((4, 3), np.inf), GOOD_Y, 1),
        lambda: M.recall_at_k(np.ones((4, 2)), [0, 1, 2], 1),
        lambda: M.recall_at_k(np.full((4, 2), np.nan), GOOD_Y, 1),
        lambda: M.evaluate_predictions(GOOD_P, GOOD_Y, features=np.ones((3, 2))),
        lambda: M.evaluate_predictions(np.zeros((0, 3)), []),
    ],
)
def test_bad_input_raises_one_line_value_error(call):
    with pytest.raises(ValueError) as info:
        call()
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ streaming


def batches(n, size):
    return [slice(s, s + size) for s in range(0, n, size)]


@pytest.mark.parametrize("from_logits", [True, False])
def test_streaming_ece_and_nll_match_numpy(from_logits):
    rng = np.random.default_rng(5)
    logits = random_logits(rng, 230, 6)
    labels = rng.integers(0, 6, 230)
    probs = probs_from(logits)
    inputs = logits if from_logits else probs.astype(np.float32)
    ece = M.ExpectedCalibrationError(num_bins=10, from_logits=from_logits)
    nll = M.NegativeLogLikelihood(from_logits=from_logits)
    for i, sl in enumerate(batches(230, 64)):
        # Alternate index and one-hot labels; both are accepted.
        y = labels[sl] if i % 2 else np.eye(6, dtype=np.float32)[labels[sl]]
        ece.update_state(y, inputs[sl])
        nll.update_state(y, inputs[sl])
    assert float(ece.result()) == pytest.approx(M.expected_calibration_error(probs, labels, 10),
                                                abs=1e-5)
    assert float(nll.result()) == pytest.approx(M.negative_log_likelihood(probs, labels),
                                                rel=1e-5)
    ece.reset_state()
    assert float(ece.result()) == 0.0


def test_streaming_ece_edges_match_numpy_on_float32():
    # Confidences exactly at float32(b/B), where float32 and float64 edges differ.
    conf = (np.arange(1, 16) / 15).astype(np.float32)
    probs = np.stack([conf, 1 - conf], axis=1).astype(np.float32)
    labels = np.arange(15) % 2
    metric = M.ExpectedCalibrationError(from_logits=False)
    metric.update_state(labels, probs)
    counts = metric.bin_count.numpy()
    np.testing.assert_array_equal(counts, M.reliability_bins(probs, labels).counts)


def test_streaming_sample_weight_zero_skips_samples():
    rng = np.random.default_rng(6)
    logits = random_logits(rng, 40, 4)
    features = rng.normal(size=(40, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 40)
    keep = rng.uniform(size=40) < 0.7
    metrics = [M.ExpectedCalibrationError(), M.NegativeLogLikelihood(), M.RecallAtK(k=2)]
    for sl in batches(40, 16):
        w = keep[sl].astype(np.float32)
        metrics[0].update_state(labels[sl], logits[sl], sample_weight=w)
        metrics[1].update_state(labels[sl], logits[sl], sample_weight=w)
        metrics[2].update_state(labels[sl], features[sl], sample_weight=w)
    p, y = probs_from(logits[keep]), labels[keep]
    assert float(metrics[0].result()) == pytest.approx(M.expected_calibration_error(p, y),
                                                       abs=1e-5)
    assert float(metrics[1].result()) == pytest.approx(M.negative_log_likelihood(p, y), rel=1e-5)
    assert float(metrics[2].result()) == pytest.approx(M.recall_at_k(features[keep], y, 2))


@pytest.mark.parametrize("k", [1, 3])
def test_streaming_recall_matches_numpy(k):
    rng = np.random.default_rng(7)
    features = rng.normal(size=(150, 6)).astype(np.float32)
    features[100:120] = features[:20]  # exact duplicates across batches
    labels = rng.integers(0, 4, 150)
    metric = M.RecallAtK(k=k, max_samples=200)
    assert metric.name == f"recall_at_{k}"
    for sl in batches(150, 32):
        metric.update_state(labels[sl], features[sl])
    assert float(metric.result()) == pytest.approx(M.recall_at_k(features, labels, k))
    metric.reset_state()
    assert float(metric.result()) == 0.0
    metric.update_state(labels[:50], features[:50])
    assert float(metric.result()) == pytest.approx(M.recall_at_k(features[:50], labels[:50], k))


def test_streaming_recall_keeps_first_max_samples():
    rng = np.random.default_rng(8)
    features = rng.normal(size=(90, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 90)
    metric = M.RecallAtK(k=2, max_samples=50)
    for sl in batches(90, 16):  # the batch that crosses 50 is split
        metric.update_state(labels[sl], features[sl])
    assert float(metric.result()) == pytest.approx(M.recall_at_k(features[:50], labels[:50], 2))


def test_streaming_bad_input_raises_value_error():
    with pytest.raises(ValueError):
        M.ExpectedCalibrationError().update_state(np.array([0, 5]), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        M.NegativeLogLikelihood().update_state(np.array([0, 1]), np.full((2, 3), np.nan))
    with pytest.raises(ValueError):
        M.RecallAtK(k=0)
    with pytest.raises(ValueError):
        M.RecallAtK(k=3, max_samples=3)


def test_streaming_config_round_trip():
    for metric in (
        M.ExpectedCalibrationError(num_bins=7, from_logits=False, name="cal"),
        M.NegativeLogLikelihood(from_logits=False),
        M.RecallAtK(k=2, max_samples=64, feature_dim=5),
    ):
        config = keras.saving.serialize_keras_object(metric)
        assert config["registered_name"].startswith("cskd_tf>")
        clone = keras.saving.deserialize_keras_object(config)
        assert type(clone) is type(metric)
        assert clone.get_config() == metric.get_config()


def test_streaming_metrics_in_compiled_model():
    """model.evaluate under XLA gives the numpy numbers on model.predict."""
    rng = np.random.default_rng(9)
    n, d, c = 200, 5, 4
    # Features on few exact directions: many similarity ties, so the XLA
    # top_k must break them towards the lower index as the numpy code does.
    x = (np.eye(d)[rng.integers(0, d, n)] * rng.integers(1, 4, (n, 1))).astype(np.float32)
    labels = rng.integers(0, c, n)

    inputs = keras.Input((d,))
    embedding = keras.layers.Identity(name="embedding")(inputs)
    logits = keras.layers.Dense(c, name="logits")(inputs)
    model = keras.Model(inputs, {"logits": logits, "embedding": embedding})
    model.compile(
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
        metrics={
            "logits": [M.ExpectedCalibrationError(), M.NegativeLogLikelihood()],
            "embedding": [M.RecallAtK(k=1, max_samples=256)],
        },
        jit_compile=True,
    )
    logs = model.evaluate(
        x, {"logits": labels, "embedding": labels}, batch_size=48, verbose=0, return_dict=True
    )
    pred = model.predict(x, batch_size=48, verbose=0)
    expected = M.evaluate_predictions(pred["logits"], labels, pred["embedding"])
    assert logs["logits_ece"] == pytest.approx(expected["ece"] / 100, abs=1e-5)
    assert logs["logits_nll"] == pytest.approx(expected["nll"], rel=1e-5)
    assert logs["embedding_recall_at_1"] == pytest.approx(recall_brute(x, labels, 1))
    assert logs["embedding_recall_at_1"] == pytest.approx(expected["recall_at_1"] / 100)

"""The CS-KD regularizer and the CE/CS-KD methods against numpy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cskd_tf import losses
from cskd_tf.config import default_config


def numpy_class_wise_kl(logits, partner, T):
    def log_softmax(z):
        z = z.astype(np.float64) / T
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(logits), log_softmax(partner)
    q = np.exp(log_q)
    return float(np.mean(np.sum(q * (log_q - log_p), axis=1)) * T * T)


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e3])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_class_wise_kl_matches_numpy(scale, T):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(16, 10)) * scale).astype(np.float32)
    partner = (rng.normal(size=(16, 10)) * scale).astype(np.float32)
    got = float(losses.class_wise_kl(logits, partner, T))
    want = numpy_class_wise_kl(logits, partner, T)
    assert np.isfinite(got)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-3)


def test_class_wise_kl_is_zero_for_identical_predictions_and_positive_otherwise():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]], np.float32)
    assert float(losses.class_wise_kl(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.class_wise_kl(logits, logits[::-1], 4.0)) > 0.1


def test_class_wise_kl_scales_with_temperature_squared_and_averages_over_batch():
    logits = np.array([[2.0, 0.0]], np.float32)
    partner = np.array([[0.0, 2.0]], np.float32)
    single = float(losses.class_wise_kl(logits, partner, 2.0))
    # Per-example KL at T=2 by hand: p = softmax([1,0]), q = softmax([0,1]).
    p = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    q = p[::-1]
    assert single == pytest.approx(4.0 * np.sum(q * np.log(q / p)), rel=1e-5)
    doubled = float(losses.class_wise_kl(np.repeat(logits, 2, 0), np.repeat(partner, 2, 0), 2.0))
    assert doubled == pytest.approx(single, rel=1e-6)


def test_no_gradient_reaches_the_partner():
    logits = tf.Variable(tf.random.normal((4, 5)))
    partner = tf.Variable(tf.random.normal((4, 5)))
    with tf.GradientTape(persistent=True) as tape:
        value = losses.class_wise_kl(logits, partner, 4.0)
    assert tape.gradient(value, partner) is None
    assert float(tf.reduce_sum(tf.abs(tape.gradient(value, logits)))) > 0


def test_keras_logits_distillation_differs_from_the_cskd_term():
    """Why class_wise_kl does not build on keras.distillation.LogitsDistillation
    (Keras 3.15):
    - with its default ``loss="kl_divergence"`` the string resolves to the
      plain function, so it applies KL to the temperature-scaled *logits*
      clipped to [1e-7, 1] (no softmax, no T²): a different quantity;
    - with a ``keras.losses.KLDivergence()`` instance it computes the softened
      KL × T², equal to ours for moderate logits, but it clips probabilities
      to [1e-7, 1], so it saturates for confident predictions while the exact
      value keeps growing."""
    rng = np.random.default_rng(1)
    small_student = rng.normal(size=(8, 10)).astype(np.float32)
    small_teacher = rng.normal(size=(8, 10)).astype(np.float32)
    ours = float(losses.class_wise_kl(small_student, small_teacher, 4.0))
    default = keras.distillation.LogitsDistillation(temperature=4.0)
    assert float(default.compute_loss(small_teacher, small_student)) != pytest.approx(ours, rel=0.1)

    keras_loss = keras.distillation.LogitsDistillation(
        temperature=4.0, loss=keras.losses.KLDivergence())
    theirs = float(keras_loss.compute_loss(small_teacher, small_student))
    assert theirs == pytest.approx(ours, rel=1e-4)

    student = np.array([[1000.0, -1000.0, 0.0]], np.float32)
    teacher = np.array([[-1000.0, 1000.0, 0.0]], np.float32)
    exact = numpy_class_wise_kl(student, teacher, 4.0)
    assert float(losses.class_wise_kl(student, teacher, 4.0)) == pytest.approx(exact, rel=1e-5)
    assert float(keras_loss.compute_loss(teacher, student)) < 0.1 * exact


def test_cross_entropy_with_label_smoothing_matches_numpy():
    logits = np.array([[2.0, 1.0, 0.1], [0.3, 0.2, 3.0]], np.float32)
    labels = np.array([0, 1])
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    eps = 0.1
    targets = np.full((2, 3), eps / 3) + (1 - eps) * np.eye(3)[labels]
    want = float(np.mean(-(targets * log_p).sum(1)))
    assert float(losses.cross_entropy(labels, logits, eps)) == pytest.approx(want, rel=1e-5)
    plain = float(np.mean(-log_p[np.arange(2), labels]))
    assert float(losses.cross_entropy(labels, logits)) == pytest.approx(plain, rel=1e-5)


def test_unknown_method_is_a_one_line_error():
    from cskd_tf.errors import ModelError

    with pytest.raises(ModelError, match="unknown method 'csdk'.*cskd") as info:
        losses.get_method("csdk", default_config())
    assert "\n" not in str(info.value)


def test_registry_declares_what_the_pipeline_must_emit():
    config = default_config()
    assert losses.get_method("ce", config).views == ("anchor",)
    cskd = losses.get_method("cskd", config)
    assert cskd.views == ("anchor", "partner")
    assert cskd.terms == ("ce", "cls")

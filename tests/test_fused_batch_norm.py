"""cskd_tf.layers.FusedBatchNormalization: Keras' batch norm, computed by the fused kernel.

The fused layer must be the same function as ``keras.layers.BatchNormalization`` (outputs,
gradients, running statistics, in training and inference, float32 and bfloat16) and fall
back to Keras' own code wherever the fused kernel does not apply. With
``unbiased_running_variance=True`` (the backbones' setting) only the running variance
differs: PyTorch's average of the unbiased batch variance.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import cskd_tf  # noqa: F401  (registers the layer for loading)
from cskd_tf.layers import BN_EPSILON, BN_MOMENTUM, FusedBatchNormalization


def _pair(policy="float32", **kwargs):
    args = dict(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, **kwargs)
    reference = keras.layers.BatchNormalization(dtype=policy, **args)
    fused = FusedBatchNormalization(dtype=policy, **args)
    for layer in (reference, fused):
        layer.build((None, 6, 6, 5))
    # Non-trivial affine parameters and running statistics, the same in both.
    rng = np.random.default_rng(0)
    values = [rng.normal(1.0, 0.3, 5), rng.normal(0.0, 0.3, 5), rng.normal(0.0, 0.5, 5),
              rng.uniform(0.5, 2.0, 5)]
    for layer in (reference, fused):
        layer.set_weights([v.astype("float32") for v in values])
    return reference, fused


def _step(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        # A loss whose gradient differs per element, so the backward pass is exercised.
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 3)
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    return y, grads


@pytest.mark.parametrize("training", [True, False])
def test_same_function_as_keras_batch_norm_in_float32(training):
    reference, fused = _pair()
    x = tf.random.stateless_normal((8, 6, 6, 5), seed=[1, 2]) * 3.0 + 1.0
    y_ref, g_ref = _step(reference, x, training)
    y_fused, g_fused = _step(fused, x, training)
    np.testing.assert_allclose(y_fused.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fused, g_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    # Running statistics: Keras' update rule with the biased batch variance.
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(),
                               reference.moving_variance.numpy(), rtol=1e-5, atol=1e-6)


def test_running_variance_is_keras_biased_one():
    """Starting from zero statistics, one update gives (1 − m) · the biased batch variance."""
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, moving_variance_initializer="zeros")
    x = tf.random.stateless_normal((2, 2, 2, 3), seed=[3, 4])  # n = 8: Bessel's 8/7 would show
    layer(x, training=True)
    biased = np.var(x.numpy(), axis=(0, 1, 2))
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.1 * biased, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * np.mean(x.numpy(), (0, 1, 2)),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape, synchronized", [((2, 2, 2, 3), False),  # fused kernel
                                                  ((2, 2, 2, 3), True),   # Keras' code
                                                  ((8, 3), False)])       # Keras' code
def test_unbiased_running_variance_is_pytorch_rule(shape, synchronized):
    """unbiased_running_variance=True: one update from zero statistics gives
    (1 − m) · n/(n − 1) · σ²_B (PyTorch's BatchNorm2d), on the fused path and on Keras'
    fallback; outputs and gradients stay those of Keras' layer."""
    args = dict(momentum=0.9, epsilon=1e-5, moving_variance_initializer="zeros",
                synchronized=synchronized)
    layer = FusedBatchNormalization(unbiased_running_variance=True, **args)
    keras_mode = FusedBatchNormalization(**args)
    x = tf.random.stateless_normal(shape, seed=[3, 4])  # n = 8: Bessel's 8/7 shows
    y, grads = _step(layer, x, True)
    y_keras, grads_keras = _step(keras_mode, x, True)
    np.testing.assert_allclose(y.numpy(), y_keras.numpy(), rtol=1e-6, atol=1e-6)
    for a, b in zip(grads, grads_keras):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    axes = tuple(range(len(shape) - 1))
    unbiased = np.var(x.numpy().astype(np.float64), axis=axes, ddof=1)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.1 * unbiased, rtol=1e-5)
    np.testing.assert_allclose(keras_mode.moving_variance.numpy(), 0.1 * unbiased * 7 / 8,
                               rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), keras_mode.moving_mean.numpy(),
                               rtol=1e-6, atol=1e-7)
    # A second update averages on from the first: v ← 0.9·v + 0.1·n/(n − 1)·σ²_B.
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.19 * unbiased, rtol=1e-5)
    # Inference does not move the statistics.
    layer(x, training=False)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.19 * unbiased, rtol=1e-5)


def test_unbiased_mode_refuses_masks_and_round_trips_its_config():
    layer = FusedBatchNormalization(unbiased_running_variance=True)
    with pytest.raises(ValueError, match="unbiased_running_variance=True does not take masked"):
        layer(tf.ones((4, 3)), training=True, mask=tf.constant([True, True, False, True]))
    clone = FusedBatchNormalization.from_config(layer.get_config())
    assert clone.unbiased_running_variance
    assert not FusedBatchNormalization().unbiased_running_variance


def test_backbones_use_pytorch_running_variance():
    from cskd_tf import models
    from cskd_tf.layers import batch_norm

    out = batch_norm(keras.Input((4, 4, 3)), "bn")
    assert out._keras_history.operation.unbiased_running_variance
    backbone = models.build("cskd_preact_resnet18", num_classes=10, width=2, init="torch")
    norms = [layer for layer in backbone.layers if isinstance(layer, FusedBatchNormalization)]
    assert norms and all(layer.unbiased_running_variance for layer in norms)


def test_bfloat16_inputs_match_keras_to_bfloat16_precision():
    reference, fused = _pair("mixed_bfloat16")
    x = tf.cast(tf.random.stateless_normal((8, 6, 6, 5), seed=[5, 6]) * 2.0, tf.bfloat16)
    y_ref, _ = _step(reference, x, True)
    y_fused, g_fused = _step(fused, x, True)
    assert y_fused.dtype == tf.bfloat16 and fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y_fused, tf.float32).numpy(),
                               tf.cast(y_ref, tf.float32).numpy(), rtol=2e-2, atol=2e-2)
    assert all(np.isfinite(tf.cast(g, tf.float32).numpy()).all() for g in g_fused)
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(),
                               rtol=1e-2, atol=1e-3)


def test_falls_back_to_keras_where_the_kernel_does_not_apply():
    # 2-D inputs (a BN after a Dense layer) and synchronized statistics run Keras' code.
    dense_bn = FusedBatchNormalization()
    assert not dense_bn._fused_applies(tf.zeros((4, 3)), None)
    out = dense_bn(tf.random.stateless_normal((4, 3), seed=[7, 8]), training=True)
    assert out.shape == (4, 3)
    synced = FusedBatchNormalization(synchronized=True)
    assert not synced._fused_applies(tf.zeros((2, 4, 4, 3)), None)
    assert FusedBatchNormalization()._fused_applies(tf.zeros((2, 4, 4, 3)), None)


def test_jit_compiled_step_matches_graph_mode():
    _, fused = _pair()
    x = tf.random.stateless_normal((8, 6, 6, 5), seed=[9, 10])
    graph = tf.function(lambda v: fused(v, training=False))(x)
    xla = tf.function(lambda v: fused(v, training=False), jit_compile=True)(x)
    np.testing.assert_allclose(xla.numpy(), graph.numpy(), rtol=1e-5, atol=1e-5)


def test_saves_and_loads_in_a_keras_file(tmp_path):
    inputs = keras.Input((6, 6, 5))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    model.layers[-1].set_weights([np.full(5, 2.0, "float32"), np.ones(5, "float32"),
                                  np.full(5, 0.5, "float32"), np.full(5, 4.0, "float32")])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("bn"), FusedBatchNormalization)
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 5)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)

"""Convolution building blocks shared by the backbones and by methods that add heads.

Every convolution is bias-free (a BatchNorm follows) and He-normal initialised,
like the PyTorch reference implementations, with ``padding="same"`` unless told
otherwise, so that the CIFAR-style networks still produce a (possibly 1x1) feature
map on 8x8 inputs. No kernel regularizers: weight decay belongs to the optimizer.
This module sits below models and losses (docs/architecture.md): the backbones
(:mod:`cskd_tf.models`) and BYOT's auxiliary branches
(:mod:`cskd_tf.losses.methods.byot`) build from the same blocks.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

# PyTorch BatchNorm2d defaults (momentum 0.1 there is 1 - 0.9 here); Keras'
# own defaults (0.99, 1e-3) would make short CIFAR runs lag behind the
# reference because the running statistics adapt ten times slower.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv(x, filters, kernel_size, name, strides=1, groups=1, padding="same"):
    """Bias-free, He-normal initialised ``Conv2D`` ("same" padding unless told)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)


@keras.saving.register_keras_serializable(package="cskd_tf")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization computed by TensorFlow's fused kernel where it applies.

    The same layer, variables and formulas as ``keras.layers.BatchNormalization``:

        y = γ · (x − μ_B) / √(σ²_B + ε) + β           (training: batch statistics)
        μ_run ← m · μ_run + (1 − m) · μ_B,  σ²_run ← m · σ²_run + (1 − m) · σ²_B
        y = γ · (x − μ_run) / √(σ²_run + ε) + β       (inference)

    with σ²_B the biased batch variance, as Keras keeps it. Why: Keras 3 builds batch
    norm from primitive ops on the TensorFlow backend (two reductions for the moments,
    then an affine map, each with its own gradient), which profiled at about 30% of the
    busy time of a width-64 PreAct ResNet-18 train step on CPU; the fused kernel
    (``FusedBatchNormV3``, oneDNN on CPU, cuDNN on GPU, and supported by XLA) does the
    forward in one op and the backward in one op, about 5x faster per layer here
    (benchmarks/README.md). Outputs, gradients and running statistics agree with
    Keras' layer to float rounding (tests/test_fused_batch_norm.py).

    ``unbiased_running_variance=True`` averages PyTorch's ``BatchNorm2d`` statistic
    instead, the unbiased batch variance n/(n − 1)·σ²_B with n = batch × H × W:

        σ²_run ← m · σ²_run + (1 − m) · n/(n − 1) · σ²_B

    (normalisation in training still divides by the biased σ²_B, as both frameworks
    do). The default, False, keeps the layer a drop-in for Keras' own; the backbones
    of :mod:`cskd_tf.models` pass True through :func:`batch_norm`, since every one of
    them transcribes a PyTorch network whose running variances the paper's recipe
    produced that way (tests/test_golden_step.py compares them with the reference's).

    The kernel returns Bessel-corrected batch variances; in Keras' mode they are scaled
    back by (n − 1)/n. The fused path covers 4-D channels-last inputs without a mask,
    renorm or synchronized statistics; every other case (and every non-TensorFlow
    backend) runs Keras' own, whose variance update is then rescaled to the unbiased
    one when asked (n summed over the replicas under synchronized statistics, as Keras
    pools their moments; masked inputs are refused in that mode).
    """

    def __init__(self, *args, unbiased_running_variance=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.unbiased_running_variance = bool(unbiased_running_variance)

    def get_config(self):
        return {**super().get_config(),
                "unbiased_running_variance": self.unbiased_running_variance}

    def _fused_applies(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4
                and self.axis in (-1, 3) and inputs.dtype in (tf.float32, tf.bfloat16,
                                                               tf.float16))

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return self._keras_call(inputs, training, mask)
        channels = inputs.shape[-1]
        gamma = (tf.cast(self.gamma, tf.float32) if self.scale
                 else tf.ones([channels], tf.float32))
        beta = (tf.cast(self.beta, tf.float32) if self.center
                else tf.zeros([channels], tf.float32))
        if training and self.trainable:
            outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC",
                is_training=True)
            if self.unbiased_running_variance:
                variance = unbiased_variance
            else:
                count = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, tf.float32)
                variance = unbiased_variance * ((count - 1.0) / count)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return tf.cast(outputs, self.compute_dtype)

    def _keras_call(self, inputs, training, mask):
        """Keras' own layer; in unbiased mode its biased update m·v + (1 − m)·σ²_B is
        rescaled to m·v + (1 − m)·n/(n − 1)·σ²_B afterwards."""
        if not (self.unbiased_running_variance and training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if mask is not None:
            raise ValueError(f"{self.name}: unbiased_running_variance=True does not take "
                             "masked inputs; pass unbiased_running_variance=False")
        # An op reading the variable now (a plain conversion may alias the variable and
        # see the update Keras makes next).
        held = keras.ops.multiply(self.moving_variance, self.momentum)
        outputs = super().call(inputs, training=training, mask=mask)
        count = keras.ops.cast(keras.ops.size(inputs) // inputs.shape[self.axis], "float32")
        replica = (tf.distribute.get_replica_context()
                   if self.synchronized and keras.backend.backend() == "tensorflow" else None)
        if replica is not None:  # Keras' synchronized moments pool every replica's examples
            count = replica.all_reduce(tf.distribute.ReduceOp.SUM, count)
        after = keras.ops.add(self.moving_variance, 0.0)
        self.moving_variance.assign(held + (after - held) * (count / (count - 1.0)))
        return outputs


def batch_norm(x, name):
    """PyTorch's ``BatchNorm2d`` defaults: momentum 0.1 (0.9 here), ε 1e-5, unbiased
    running variance."""
    return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                   unbiased_running_variance=True, name=name)(x)


def relu(x, name):
    return layers.ReLU(name=name)(x)


def bn_relu(x, name):
    """BatchNorm followed by ReLU; layers are named ``{name}_bn`` and ``{name}_relu``."""
    return relu(batch_norm(x, f"{name}_bn"), f"{name}_relu")

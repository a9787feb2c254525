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


def batch_norm(x, name):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def relu(x, name):
    return layers.ReLU(name=name)(x)


def bn_relu(x, name):
    """BatchNorm followed by ReLU; layers are named ``{name}_bn`` and ``{name}_relu``."""
    return relu(batch_norm(x, f"{name}_bn"), f"{name}_relu")

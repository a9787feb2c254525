"""Initial-weight schemes applied to a built backbone (``build(..., init=...)``).

``"he_normal"`` (the default) keeps what the layers were built with: He-normal
convolution and classifier kernels, zero biases (He et al., ICCV 2015).

``"torch"`` re-draws every weight as the CS-KD reference code
(github.com/alinlab/cs-kd, ``models/``) starts training. Its CIFAR networks
(``CIFAR_ResNet``, ``CIFAR_DenseNet``) call no initializer, so PyTorch's layer
constructors decide (``conv_rule="pytorch_default"``):

    Conv2d, Linear:  W ~ U(−b, b),  b = 1/√fan_in       (kaiming_uniform_, a = √5)
                     bias ~ U(−b, b), same b               (when the layer has one)
    BatchNorm2d:     γ = 1, β = 0, running mean 0, var 1

with fan_in = kernel_h · kernel_w · in_channels / groups: a kernel std of
1/√(3·fan_in), √6 ≈ 2.45 times smaller than He-normal's √(2/fan_in). Its
ImageNet-style networks override the convolutions (torchvision's code):
``ResNet`` draws W ~ N(0, 2/fan_out) (``conv_rule="kaiming_normal_fan_out"``,
fan_out = k_h · k_w · out_channels / groups) and ``DenseNet`` W ~ N(0, 2/fan_in)
with a zero classifier bias (``conv_rule="kaiming_normal_fan_in"``); their
Linear and BatchNorm layers follow the rule above. The registry records each
architecture's rule. Layers of other kinds (the cosine classifier, AdaCos'
scale) keep their own.
The draws come from Keras' global seed, so ``keras.utils.set_random_seed``
makes them reproducible.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from cskd_tf.errors import ModelError

INITS = ("he_normal", "torch")
CONV_RULES = ("pytorch_default", "kaiming_normal_fan_out", "kaiming_normal_fan_in")


def check_init(name):
    if name not in INITS:
        raise ModelError(f"unknown init {name!r}; use one of: {', '.join(INITS)}")
    return name


def _walk(layer):
    yield layer
    for child in getattr(layer, "layers", ()) or ():
        yield from _walk(child)


def _torch_uniform(variable, fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    values = keras.random.uniform(tuple(variable.shape), -bound, bound, dtype=variable.dtype)
    variable.assign(values)


def _kaiming_normal(variable, fan):
    std = math.sqrt(2.0 / fan)
    variable.assign(keras.random.normal(tuple(variable.shape), 0.0, std, dtype=variable.dtype))


def apply_init(model, scheme="he_normal", conv_rule="pytorch_default"):
    """Re-initialise ``model``'s convolutions, dense layers and BNs by ``scheme``; returns it.

    ``conv_rule`` (one of :data:`CONV_RULES`) is how the reference code draws
    convolution kernels for this architecture; only ``scheme="torch"`` reads it.
    """
    check_init(scheme)
    if conv_rule not in CONV_RULES:
        raise ModelError(f"unknown conv_rule {conv_rule!r}; use one of: {', '.join(CONV_RULES)}")
    if scheme == "he_normal":
        return model
    for layer in _walk(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = layer.kernel
            # Conv kernels are (kh, kw, in/groups, out); dense kernels (in, out).
            fan_in = int(np.prod(kernel.shape[:-1]))
            bias = getattr(layer, "bias", None)
            is_conv = isinstance(layer, keras.layers.Conv2D)
            if is_conv and conv_rule == "kaiming_normal_fan_out":
                groups = int(getattr(layer, "groups", 1) or 1)
                fan_out = int(np.prod(kernel.shape[:2])) * int(kernel.shape[-1]) // groups
                _kaiming_normal(kernel, fan_out)
            elif is_conv and conv_rule == "kaiming_normal_fan_in":
                _kaiming_normal(kernel, fan_in)
            else:
                _torch_uniform(kernel, fan_in)
            if bias is not None:
                if not is_conv and conv_rule == "kaiming_normal_fan_in":
                    bias.assign(np.zeros(bias.shape, dtype=bias.dtype))
                else:
                    _torch_uniform(bias, fan_in)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for name, value in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0),
                                ("moving_variance", 1.0)):
                variable = getattr(layer, name, None)
                if variable is not None:
                    variable.assign(np.full(variable.shape, value, dtype=variable.dtype))
    return model

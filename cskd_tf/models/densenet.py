"""DenseNet-121 (Huang et al., "Densely Connected Convolutional Networks",
CVPR 2017), in the BC variant (bottleneck + compression).

* ``densenet121_cifar``: hand-written DenseNet-BC for 32x32 inputs: a 3x3
  stride-1 stem convolution with 2k channels and no max-pool, dense blocks
  of 6-12-24-16 layers (each ``BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k)``,
  concatenated), transitions ``BN-ReLU-conv1x1(floor(C/2))-avgpool2``
  between blocks, final BN-ReLU. Growth rate k = 32; ``width`` sets k.
  7,048,548 trainable parameters at 100 classes (hand formula in
  tests/test_models.py), the count of the CS-KD code's ``CIFAR_DenseNet121``
  (``models/densenet3.py``), whose layout this is (it concatenates
  ``[new, old]`` channels where this concatenates ``[old, new]``, an equivalent
  permutation). Its torchvision-style ``densenet121`` (7x7 stem, max-pool;
  7,056,356 at 100 classes) is the 224 px ``densenet121`` below.
* ``densenet121``: torchvision's ``DenseNet`` as the CS-KD code copies it
  (``models/densenet.py``, ``densenet121``): a 7x7/2 stem convolution with 2k
  channels, BN-ReLU, a 3x3/2 max-pool, the same dense blocks and transitions
  (whose 2x2/2 average pool floors odd maps, as PyTorch's does), a final
  BN-ReLU. Bias-free convolutions, PyTorch's BN momentum (0.1, i.e. Keras 0.9)
  and ε 1e-5, symmetric padding as PyTorch's. k = 32; ``width`` sets k (the
  stem keeps 2k). 7,978,856 trainable parameters at 1000 classes
  (= torchvision). The input must be at least 32x32 (four halvings after the
  stem leave a 1x1 map).
* ``keras_densenet121``: ``keras.applications.DenseNet121`` for users who want
  Keras' own (same parameter count; BN momentum 0.99, ε 1.001e-5, Keras
  padding); not what the paper cells train. ``width`` is not supported.

Stages ``stage1``..``stage3`` are the outputs of dense blocks 1-3 (before
the transition); ``stage4`` is the last block after the final BN-ReLU, so
``features`` is the global average of ``stage4``.
"""

from __future__ import annotations

import keras
from keras import layers

from cskd_tf.models._common import bn_relu, channels, conv, global_pool, stage_output
from cskd_tf.models.registry import register
from cskd_tf.models.resnet import imagenet_stem, wrap_application

_BLOCKS_121 = (6, 12, 24, 16)
_BOTTLENECK = 4
_COMPRESSION = 0.5


def _dense_layer(x, growth_rate, name):
    y = bn_relu(x, f"{name}_0")
    y = conv(y, _BOTTLENECK * growth_rate, 1, f"{name}_conv1")
    y = bn_relu(y, f"{name}_1")
    y = conv(y, growth_rate, 3, f"{name}_conv2")
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def _transition(x, name, pool_padding):
    y = bn_relu(x, name)
    y = conv(y, int(channels(x) * _COMPRESSION), 1, f"{name}_conv")
    return layers.AveragePooling2D(2, strides=2, padding=pool_padding, name=f"{name}_pool")(y)


def _dense_stages(x, growth_rate, pool_padding):
    """Dense blocks 6-12-24-16 with transitions, final BN-ReLU; returns the pooled features."""
    for stage, num_layers in enumerate(_BLOCKS_121, start=1):
        for i in range(num_layers):
            x = _dense_layer(x, growth_rate, f"d{stage}l{i + 1}")
        if stage < len(_BLOCKS_121):
            x = stage_output(x, stage)
            x = _transition(x, f"t{stage}", pool_padding)
        else:
            x = stage_output(bn_relu(x, "post"), stage)
    return global_pool(x)


@register("densenet121_cifar", style="cifar", min_size=8, standard_width=32)
def densenet121_cifar(inputs, width):
    """DenseNet-BC-121 for 32px inputs (k=32, 6-12-24-16); 7,048,548 params at 100 classes."""
    x = conv(inputs, 2 * width, 3, "stem_conv")
    # "same" pooling keeps odd-sized maps (e.g. 8 -> 4 -> 2 -> 1 for 8x8 inputs)
    # from shrinking to zero.
    return _dense_stages(x, width, "same")


@register("densenet121", style="imagenet", min_size=32, standard_width=32,
          torch_conv_init="kaiming_normal_fan_in")
def densenet121(inputs, width):
    """DenseNet-121 in torchvision's layout (k=32, 6-12-24-16); 7,978,856 params at 1000 classes."""
    # torchvision's AvgPool2d(2, 2) floors odd maps ("valid").
    return _dense_stages(imagenet_stem(inputs, 2 * width), width, "valid")


@register("keras_densenet121", style="imagenet", min_size=32,
          torch_conv_init="kaiming_normal_fan_in")
def keras_densenet121(inputs, width):
    """DenseNet-121 via keras.applications (ImageNet layout); 7,978,856 params at 1000 classes."""
    return wrap_application(
        keras.applications.DenseNet121,
        inputs,
        ("conv2_block6_concat", "conv3_block12_concat", "conv4_block24_concat", "relu"),
    )

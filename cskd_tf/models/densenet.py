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
* ``densenet121``: ``keras.applications.DenseNet121`` (ImageNet layout,
  bias-free convolutions, same layer structure as torchvision): 7,978,856
  trainable parameters at 1000 classes. ``width`` is not supported and the
  input must be at least 32x32 (its valid-padded pooling needs it). Kernels
  are initialised He-normal like the PyTorch reference.

Stages ``stage1``..``stage3`` are the outputs of dense blocks 1-3 (before
the transition); ``stage4`` is the last block after the final BN-ReLU, so
``features`` is the global average of ``stage4``.
"""

from __future__ import annotations

import keras
from keras import layers

from cskd_tf.models._common import bn_relu, channels, conv, global_pool, stage_output
from cskd_tf.models.registry import register
from cskd_tf.models.resnet import wrap_application

_BLOCKS_121 = (6, 12, 24, 16)
_BOTTLENECK = 4
_COMPRESSION = 0.5


def _dense_layer(x, growth_rate, name):
    y = bn_relu(x, f"{name}_0")
    y = conv(y, _BOTTLENECK * growth_rate, 1, f"{name}_conv1")
    y = bn_relu(y, f"{name}_1")
    y = conv(y, growth_rate, 3, f"{name}_conv2")
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def _transition(x, name):
    y = bn_relu(x, name)
    y = conv(y, int(channels(x) * _COMPRESSION), 1, f"{name}_conv")
    # "same" keeps odd-sized maps (e.g. 8 -> 4 -> 2 -> 1 for 8x8 inputs)
    # from shrinking to zero.
    return layers.AveragePooling2D(2, strides=2, padding="same", name=f"{name}_pool")(y)


@register("densenet121_cifar", style="cifar", min_size=8, standard_width=32)
def densenet121_cifar(inputs, width):
    """DenseNet-BC-121 for 32px inputs (k=32, 6-12-24-16); 7,048,548 params at 100 classes."""
    growth_rate = width
    x = conv(inputs, 2 * growth_rate, 3, "stem_conv")
    for stage, num_layers in enumerate(_BLOCKS_121, start=1):
        for i in range(num_layers):
            x = _dense_layer(x, growth_rate, f"d{stage}l{i + 1}")
        if stage < len(_BLOCKS_121):
            x = stage_output(x, stage)
            x = _transition(x, f"t{stage}")
        else:
            x = stage_output(bn_relu(x, "post"), stage)
    return global_pool(x)


@register("densenet121", style="imagenet", min_size=32, torch_conv_init="kaiming_normal_fan_in")
def densenet121(inputs, width):
    """DenseNet-121 via keras.applications (ImageNet layout); 7,978,856 params at 1000 classes."""
    return wrap_application(
        keras.applications.DenseNet121,
        inputs,
        ("conv2_block6_concat", "conv3_block12_concat", "conv4_block24_concat", "relu"),
    )

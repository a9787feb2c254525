"""ResNeXt-101 32x4d (Xie et al., "Aggregated Residual Transformations for
Deep Neural Networks", CVPR 2017).

ImageNet layout (7x7/2 stem, 3x3/2 max-pool) with four stages of 3-4-23-3
post-activation bottleneck blocks: ``conv1x1(d)-BN-ReLU-
groupedconv3x3(d, 32 groups, stride)-BN-ReLU-conv1x1(4p)-BN`` plus the
(projection) shortcut, then ReLU. p = 64, 128, 256, 512 per stage and the
grouped width d = 32 groups x 4 channels x p/64 = 128, 256, 512, 1024; the
stride sits on the 3x3 convolution (the torchvision "v1.5" placement).
The grouped convolution is a single ``Conv2D(groups=32)``.

44,177,704 trainable parameters at 1000 classes (= the torchvision-layout
reference). ``width`` is not supported. Stages ``stage1``..``stage4`` are
the outputs of the last block of each stage.
"""

from __future__ import annotations

from keras import layers

from cskd_tf.models._common import batch_norm, bn_relu, conv, relu, stack_stages
from cskd_tf.models.registry import register
from cskd_tf.models.resnet import imagenet_stem, projection

_BLOCKS = (3, 4, 23, 3)
_GROUPS = 32
_WIDTH_PER_GROUP = 4
_EXPANSION = 4


def _bottleneck(x, planes, strides, name):
    inner = planes * _WIDTH_PER_GROUP * _GROUPS // 64
    out = planes * _EXPANSION
    shortcut = projection(x, out, strides, name)
    y = conv(x, inner, 1, f"{name}_conv1")
    y = bn_relu(y, f"{name}_1")
    y = conv(y, inner, 3, f"{name}_conv2", strides=strides, groups=_GROUPS)
    y = bn_relu(y, f"{name}_2")
    y = conv(y, out, 1, f"{name}_conv3")
    y = batch_norm(y, f"{name}_3_bn")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return relu(y, f"{name}_out")


@register("resnext101_32x4d", style="imagenet", min_size=8,
          torch_conv_init="kaiming_normal_fan_out")
def resnext101_32x4d(inputs, width):
    """ResNeXt-101 32x4d (ImageNet-style, 3-4-23-3); 44,177,704 params at 1000 classes."""
    return stack_stages(imagenet_stem(inputs, 64), 64, _BLOCKS, _bottleneck)

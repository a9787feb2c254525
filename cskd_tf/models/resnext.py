"""ResNeXt-101 32x4d (Xie et al., "Aggregated Residual Transformations for
Deep Neural Networks", CVPR 2017), the third network of the CS-KD paper's
ImageNet table.

The CS-KD code (github.com/alinlab/cs-kd, ``models/resnet.py``) defines
ResNeXts as its torchvision-style ``ResNet(Bottleneck, layers, groups=...,
width_per_group=...)`` but ships only 50-32x4d and 101-32x8d constructors;
this is that class with ``layers=[3, 4, 23, 3], groups=32,
width_per_group=4``: the bottleneck of :func:`~cskd_tf.models.resnet.bottleneck_body`
with a grouped 3x3 convolution (a single ``Conv2D(groups=32)``) of
d = 2p = 128, 256, 512, 1024 channels, the stride on the 3x3 convolution,
symmetric PyTorch padding.

44,177,704 trainable parameters at 1000 classes (= that class and
torchvision's ``ResNet`` with the same arguments). ``width`` is not
supported. Stages ``stage1``..``stage4`` are the outputs of the last block
of each stage.
"""

from __future__ import annotations

from cskd_tf.models.registry import register
from cskd_tf.models.resnet import bottleneck_body

_BLOCKS = (3, 4, 23, 3)


@register("resnext101_32x4d", style="imagenet", min_size=8,
          torch_conv_init="kaiming_normal_fan_out")
def resnext101_32x4d(inputs, width):
    """ResNeXt-101 32x4d (ImageNet-style, 3-4-23-3); 44,177,704 params at 1000 classes."""
    return bottleneck_body(inputs, 64, _BLOCKS, groups=32, width_per_group=4)

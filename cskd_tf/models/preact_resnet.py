"""Pre-activation ResNets for 32x32 inputs (CIFAR-style).

Architecture: He et al., "Identity Mappings in Deep Residual Networks",
ECCV 2016, in the CIFAR layout used by CS-KD (Yun et al., CVPR 2020): a 3x3
stride-1 stem convolution (no max-pool), four stages of pre-activation
BasicBlocks with widths w, 2w, 4w, 8w and strides 1, 2, 2, 2, a final
BN-ReLU, global average pooling and the shared head.

Each block computes ``BN-ReLU-conv3x3-BN-ReLU-conv3x3`` and adds the
shortcut; when the shape changes the shortcut is a bias-free 1x1 (strided)
convolution of the pre-activated input.

Parameter counts (trainable, w=64, 100 classes, linear head):

* ``preact_resnet18`` (blocks 2-2-2-2): 11,218,340 (the often quoted
  11,220,132 is the post-activation CIFAR ResNet-18 with BN in its
  shortcuts; the CS-KD repo's ``CIFAR_ResNet18``, which has a stem BN and no
  final BN, has 11,217,444).
* ``preact_resnet10`` (blocks 1-1-1-1): 4,947,620.

``width`` scales w (standard 64), e.g. width=16 gives a ~0.7M-parameter
ResNet-18 for CPU-budget runs. Stages ``stage1``..``stage3`` are the raw
residual sums of each stage; ``stage4`` is taken after the final BN-ReLU, so
``features`` is exactly its global average.
"""

from __future__ import annotations

from keras import layers

from cskd_tf.models._common import bn_relu, channels, conv, stack_stages
from cskd_tf.models.registry import register



def _preact_block(x, filters, strides, name):
    pre = bn_relu(x, f"{name}_pre")
    if strides != 1 or channels(x) != filters:
        # The projection sees the normalised input, as in the identity-mapping
        # paper; projecting the raw sum would skip the only BN on that path.
        shortcut = conv(pre, filters, 1, f"{name}_shortcut_conv", strides=strides)
    else:
        shortcut = x
    y = conv(pre, filters, 3, f"{name}_conv1", strides=strides)
    y = bn_relu(y, f"{name}_mid")
    y = conv(y, filters, 3, f"{name}_conv2")
    return layers.Add(name=f"{name}_add")([y, shortcut])


def preact_resnet_body(inputs, width, blocks):
    """Shared body of the pre-activation ResNets; returns the pooled features."""
    x = conv(inputs, width, 3, "stem_conv")
    return stack_stages(x, width, blocks, _preact_block, after_last=lambda y: bn_relu(y, "post"))


@register("preact_resnet18", style="cifar", min_size=8, standard_width=64)
def preact_resnet18(inputs, width):
    """Pre-activation ResNet-18 (CIFAR, blocks 2-2-2-2); 11,218,340 params at 100 classes."""
    return preact_resnet_body(inputs, width, (2, 2, 2, 2))


@register("preact_resnet10", style="cifar", min_size=8, standard_width=64)
def preact_resnet10(inputs, width):
    """Pre-activation ResNet-10 (CIFAR, blocks 1-1-1-1); 4,947,620 params at 100 classes."""
    return preact_resnet_body(inputs, width, (1, 1, 1, 1))

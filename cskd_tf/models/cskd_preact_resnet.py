"""The CS-KD reference code's PreAct ResNets, layer for layer (``cskd_preact_resnet*``).

Source: ``models/resnet.py`` of the paper's code (github.com/alinlab/cs-kd),
classes ``CIFAR_ResNet`` and ``PreActBlock``: the networks behind every 32 px
number of Yun et al. (CVPR 2020). They differ from the textbook pre-activation
ResNet of :mod:`cskd_tf.models.preact_resnet` (He et al., ECCV 2016) in three
places, and the differences matter for CS-KD (``benchmarks/README.md``,
section 1, measures them):

(a) stem: ``conv3x3 → BN → ReLU`` (the textbook stem is a bare conv);
(b) no final ``BN → ReLU`` before pooling: the pooled features are the raw
    residual sum of the last block (so they can be negative);
(c) every block computes ``p = ReLU(BN1(x))`` and adds the *pre-activated*
    ``p`` (or its 1x1 projection) to its residual branch, not the raw ``x``::

        p   = ReLU(BN1(x))
        out = conv3x3(ReLU(BN2(conv3x3_s(p)))) + (p if identity else conv1x1_s(p))

    so the residual stream is re-normalised in every block.

Convolutions pad symmetrically like PyTorch's ``padding=1``: a stride-2 3x3
conv sees rows/columns ``-1, 1, 3, ...``, where Keras' ``padding="same"``
would pad only after the last row and see ``0, 2, 4, ...``. The classifier is
``Linear(8w, num_classes)`` with bias. The reference pools with
``avg_pool2d(out, 4)``, the global average at 32 px (its only input size).

Trainable parameters at w = 64 (the reference's only width), 100 classes:
``cskd_preact_resnet18`` 11,217,444 and ``cskd_preact_resnet10`` 4,946,724,
the counts ``sum(p.numel() for p in CIFAR_ResNet18(num_classes=100).parameters())``
gives. ``width`` narrows every stage proportionally (w, 2w, 4w, 8w) for CPU
budgets. Build with ``init="torch"`` for the reference's initial weights.
"""

from __future__ import annotations

from keras import layers

from cskd_tf.models._common import batch_norm, channels, conv, conv_symmetric, relu, stack_stages
from cskd_tf.models.registry import register


def _reference_block(x, filters, strides, name):
    pre = relu(batch_norm(x, f"{name}_bn1"), f"{name}_relu1")
    if strides != 1 or channels(x) != filters:
        shortcut = conv(pre, filters, 1, f"{name}_shortcut_conv", strides=strides)
    else:
        shortcut = pre  # (c): the identity carries the pre-activated input
    y = conv_symmetric(pre, filters, 3, f"{name}_conv1", strides=strides)
    y = relu(batch_norm(y, f"{name}_bn2"), f"{name}_relu2")
    y = conv_symmetric(y, filters, 3, f"{name}_conv2")
    return layers.Add(name=f"{name}_add")([y, shortcut])


def reference_preact_body(inputs, width, blocks):
    """Body shared by the reference PreAct ResNets; returns the pooled features."""
    x = conv(inputs, width, 3, "stem_conv")
    x = relu(batch_norm(x, "stem_bn"), "stem_relu")  # (a)
    return stack_stages(x, width, blocks, _reference_block)  # (b): nothing after the last


def _register_reference(name, blocks, reference_class, parameters):
    def body(inputs, width):
        return reference_preact_body(inputs, width, blocks)

    body.__name__ = body.__qualname__ = name
    body.__doc__ = (f"The CS-KD code's {reference_class} (blocks {'-'.join(map(str, blocks))}); "
                    f"{parameters:,} params at 100 classes.")
    return register(name, style="cifar", min_size=8, standard_width=64)(body)


cskd_preact_resnet18 = _register_reference("cskd_preact_resnet18", (2, 2, 2, 2), "CIFAR_ResNet18",
                                           11_217_444)
cskd_preact_resnet10 = _register_reference("cskd_preact_resnet10", (1, 1, 1, 1), "CIFAR_ResNet10",
                                           4_946_724)

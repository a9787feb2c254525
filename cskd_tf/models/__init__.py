"""Backbone registry of cskd_tf.

``build(name, num_classes, input_shape=None, width=0, head="linear", **kw)``
returns a functional ``keras.Model`` mapping a normalized image batch to
``{"logits": (B, num_classes), "features": (B, D)}`` (both float32). Layers
named ``stage1``..``stage4``, ``features`` and ``classifier`` are part of the
contract other modules rely on. See :mod:`cskd_tf.models.registry`.

Registered names: preact_resnet10, preact_resnet18, cskd_preact_resnet10,
cskd_preact_resnet18 (the CS-KD code's layout), densenet121_cifar
(CIFAR-style, 32x32 default) and resnet10, resnet18, resnet50, resnet101,
densenet121, resnext101_32x4d (ImageNet-style, 224x224 default, torchvision's
layout as the CS-KD code uses it), keras_resnet50, keras_resnet101,
keras_densenet121 (``keras.applications``' own).
"""

from cskd_tf.models.heads import CosineClassifier, HEADS, attach_head
from cskd_tf.models.registry import (
    ModelSpec,
    available,
    build,
    default_input_shape,
    get_spec,
    parameter_count,
    register,
)

# Importing the backbone modules registers their architectures.
from cskd_tf.models import (  # noqa: E402,F401
    cskd_preact_resnet, densenet, preact_resnet, resnet, resnext)
from cskd_tf.models.cskd_model import CSKDModel, Normalize  # noqa: E402
from cskd_tf.models.compile_args import evaluation_only  # noqa: E402

__all__ = [
    "CSKDModel",
    "evaluation_only",
    "CosineClassifier",
    "Normalize",
    "HEADS",
    "ModelSpec",
    "attach_head",
    "available",
    "build",
    "default_input_shape",
    "get_spec",
    "parameter_count",
    "register",
]

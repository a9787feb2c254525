"""Backbone registry of cskd_tf.

``build(name, num_classes, input_shape=None, width=0, head="linear", **kw)``
returns a functional ``keras.Model`` mapping a normalized image batch to
``{"logits": (B, num_classes), "features": (B, D)}`` (both float32). Layers
named ``stage1``..``stage4``, ``features`` and ``classifier`` are part of the
contract other modules rely on. See :mod:`cskd_tf.models.registry`.

Every module of this package is imported here, so a backbone module registers
itself (``@register``); ``available()`` lists the names, :data:`MODELS` holds the
entries (each with its :class:`ModelSpec`).
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

from cskd_tf.models.cskd_model import CSKDModel, Normalize
from cskd_tf.models.compile_args import evaluation_only
from cskd_tf.registry import MODELS

# Importing every module of the package registers its backbones.
MODELS.discover()

__all__ = [
    "CSKDModel",
    "evaluation_only",
    "CosineClassifier",
    "Normalize",
    "HEADS",
    "MODELS",
    "ModelSpec",
    "attach_head",
    "available",
    "build",
    "default_input_shape",
    "get_spec",
    "parameter_count",
    "register",
]

"""Classifier heads shared by every backbone.

:func:`attach_head` turns a backbone's pooled feature tensor into the model
contract the rest of ``cskd_tf`` relies on::

    model(x) -> {"logits": (B, num_classes) float32, "features": (B, D) float32}

with the pooled features produced by a layer named ``features`` and the
classifier by a layer named ``classifier``. Both run in float32 even under a
``mixed_float16`` or ``mixed_bfloat16`` global policy (``auto`` on a CPU with
bfloat16 hardware, cskd_tf/runtime.py): the softmax / KL terms of CS-KD and the
Recall@k distances are computed from these tensors and 16-bit logits lose too
much precision once a temperature divides them.

Three heads are available:

* ``"linear"``: ``Dense(num_classes)`` with bias (the CS-KD reference head).
* ``"cosine"``: :class:`CosineClassifier`, ``scale * cos(theta)`` between the
  normalised features and the normalised class weights, used by AdaCos and
  other normalised-softmax baselines.
* ``"linear_nobias"``: ``Dense(num_classes, use_bias=False)``, logits = Wᵀz, for
  methods defined on a bias-free classifier (Virtual-softmax).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from cskd_tf.errors import ModelError

HEADS = ("linear", "cosine", "linear_nobias")


@keras.saving.register_keras_serializable(package="cskd_tf")
class CosineClassifier(layers.Layer):
    """Bias-free cosine classifier: ``scale * normalize(x) @ normalize(W)``.

    ``W`` has shape ``(D, units)`` and is normalised per class (column).
    ``scale`` is a non-trainable scalar variable owned by the layer, so
    AdaCos can adapt it during training with ``layer.scale.assign(s)`` and it
    is saved with the weights. The cosine is clipped to ``[-1, 1]`` so the
    output always lies in ``[-scale, scale]`` and ``arccos`` of
    ``logits / scale`` never sees a value pushed just past 1 by round-off.

    Args:
        units: number of classes.
        scale: initial value of the ``scale`` variable (> 0).
        kernel_initializer: initializer of ``W``.
        unit_scale_at_inference: if True, ``call(..., training=False)`` returns the bare
            cosines (scale 1), as the widely used AdaCos code evaluates
            (4uiiurz1/pytorch-adacos, metrics.py; see docs/baselines.md); training always
            uses ``scale``.
    """

    def __init__(self, units, scale=1.0, kernel_initializer="he_normal",
                 unit_scale_at_inference=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.initial_scale = float(scale)
        self.unit_scale_at_inference = bool(unit_scale_at_inference)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(input_shape[-1]), self.units),
            initializer=self.kernel_initializer,
            trainable=True,
        )
        self.scale = self.add_weight(
            name="scale",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_scale),
            trainable=False,
        )

    def call(self, inputs, training=None):
        x = ops.normalize(inputs, axis=-1, epsilon=1e-12)
        w = ops.normalize(ops.cast(self.kernel, x.dtype), axis=0, epsilon=1e-12)
        cosine = ops.clip(ops.matmul(x, w), -1.0, 1.0)
        if self.unit_scale_at_inference and not training:
            return cosine
        return cosine * ops.cast(self.scale, cosine.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "scale": self.initial_scale,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "unit_scale_at_inference": self.unit_scale_at_inference,
            }
        )
        return config


def make_classifier(num_classes, head="linear", scale=1.0):
    """Return the (unbuilt) classifier layer named ``classifier`` for ``head``."""
    if head in ("linear", "linear_nobias"):
        return layers.Dense(
            num_classes,
            use_bias=head == "linear",
            kernel_initializer="he_normal",
            dtype="float32",
            name="classifier",
        )
    if head == "cosine":
        return CosineClassifier(num_classes, scale=scale, dtype="float32", name="classifier")
    raise ModelError(f"unknown head {head!r}; use one of: {', '.join(HEADS)}")


def attach_head(inputs, pooled, num_classes, head="linear", scale=1.0, name=None):
    """Wrap a backbone graph into the ``{"logits", "features"}`` functional model.

    Args:
        inputs: the backbone's ``keras.Input``.
        pooled: the globally pooled ``(B, D)`` penultimate tensor.
        num_classes: classifier width.
        head: one of :data:`HEADS`.
        scale: initial scale of the cosine head (ignored for the linear heads).
        name: model name.
    """
    features = layers.Activation("linear", dtype="float32", name="features")(pooled)
    logits = make_classifier(num_classes, head=head, scale=scale)(features)
    return keras.Model(inputs, {"logits": logits, "features": features}, name=name)

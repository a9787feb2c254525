"""Be Your Own Teacher, BYOT (Zhang et al., ICCV 2019), Table 2.

The backbone's stages ``stage1``..``stageN`` (the naming contract of
:mod:`cskd_tf.models`) each except the last get an auxiliary classifier:

    stage_k output → BN → ReLU → Conv1×1 (D channels) → BN → ReLU
                   → global average pool = z_k (B, D) → Dense(C) = logits q_k

where D is the width of the backbone's penultimate ``features`` (z_N) so the
feature hint compares like with like. The deepest classifier is the model's
own ``classifier`` (q_N). With T = config.byot_temperature (3), α =
config.byot_alpha (0.3) and β = config.byot_beta (1e-6):

    L = CE(q_N, y)
        + Σ_{k<N} [ (1 − α) · CE(q_k, y)
                    + α · T² · KL( softmax(q̃_N / T) ‖ softmax(q_k / T) )
                    + β · ‖z_k − z̃_N‖² ]

q̃_N, z̃_N: the deepest head's logits and features, detached, so the deepest
head is trained by plain CE only. KL summed over classes and ‖·‖² over
feature dimensions, both averaged over the batch.

Simplifications of the paper, documented: BYOT's bottlenecks downsample a
stage to the final resolution with strided convolutions and its hint compares
feature *maps*; here each auxiliary head is a 1×1 bottleneck followed by
global pooling and the hint compares the pooled vectors. The auxiliary heads
are created in :meth:`build` as layers of the CSKDModel (attribute
``byot_heads``), so they train, get weight decay and are checkpointed;
inference and export use only the deepest classifier.

Cost: one forward and one backward pass per step plus the small heads
(≈ 1.1× the compute of CE).
"""

import re

import keras
import tensorflow as tf
from keras import layers

from cskd_tf.errors import ModelError
from cskd_tf.losses.kl import softened_kl_per_example
from cskd_tf.losses.methods.base import Method, cross_entropy, register


def stage_layers(backbone):
    """The backbone's ``stageK`` layers in order of K."""
    found = {int(m.group(1)): layer for layer in backbone.layers
             if (m := re.fullmatch(r"stage(\d+)", layer.name))}
    return [found[k] for k in sorted(found)]


def auxiliary_head(input_shape, feature_dim, num_classes, index):
    """The functional BYOT head for stage ``index``: map → {"features", "logits"}."""
    name = f"byot_head{index}"
    inputs = keras.Input(shape=tuple(input_shape), name=f"{name}_input")
    x = layers.BatchNormalization(name=f"{name}_bn1")(inputs)
    x = layers.ReLU(name=f"{name}_relu1")(x)
    x = layers.Conv2D(feature_dim, 1, use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn2")(x)
    x = layers.ReLU(name=f"{name}_relu2")(x)
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    features = layers.Activation("linear", dtype="float32", name=f"{name}_features")(x)
    logits = layers.Dense(num_classes, kernel_initializer="he_normal", dtype="float32",
                          name=f"{name}_classifier")(features)
    return keras.Model(inputs, {"features": features, "logits": logits}, name=name)


def byot_loss(deep_logits, deep_features, aux_outputs, labels, temperature, alpha, beta):
    """(total, terms) of BYOT from the deepest head's outputs and the auxiliary ones."""
    ce = cross_entropy(labels, deep_logits)
    aux_ce = aux_kd = hint = tf.constant(0.0, tf.float32)
    target = tf.stop_gradient(tf.cast(deep_features, tf.float32))
    for out in aux_outputs:
        aux_ce += cross_entropy(labels, out["logits"])
        aux_kd += tf.reduce_mean(softened_kl_per_example(out["logits"], deep_logits, temperature))
        hint += tf.reduce_mean(tf.reduce_sum(
            tf.square(tf.cast(out["features"], tf.float32) - target), axis=-1))
    aux_kd = aux_kd * (temperature ** 2)
    total = ce + (1.0 - alpha) * aux_ce + alpha * aux_kd + beta * hint
    return total, {"ce": ce, "aux_ce": aux_ce, "aux_kd": aux_kd, "hint": hint}


@register("byot")
class BeYourOwnTeacher(Method):
    terms = ("ce", "aux_ce", "aux_kd", "hint")

    def build(self, model):
        backbone = model.backbone
        stages = stage_layers(backbone)
        if len(stages) < 2:
            raise ModelError(f"method 'byot' needs a backbone with at least two stage layers "
                             f"(stage1, stage2, ...); {backbone.name!r} has {len(stages)}")
        feature_dim = int(backbone.get_layer("features").output.shape[-1])
        num_classes = int(backbone.get_layer("classifier").output.shape[-1])
        shallow = stages[:-1]
        # One pass yields the shallow stage maps and the deepest head's outputs.
        self.tap = keras.Model(backbone.input,
                               {"stages": [layer.output for layer in shallow],
                                "logits": backbone.get_layer("classifier").output,
                                "features": backbone.get_layer("features").output},
                               name=f"{backbone.name}_byot_tap")
        model.byot_heads = [auxiliary_head(layer.output.shape[1:], feature_dim, num_classes, k)
                            for k, layer in enumerate(shallow, start=1)]

    def loss(self, model, images, labels, targets):
        out = self.tap(model.normalize(images[0]), training=True)
        aux = [head(stage, training=True) for head, stage in zip(model.byot_heads, out["stages"])]
        total, terms = byot_loss(out["logits"], out["features"], aux, labels,
                                 float(self.config.byot_temperature),
                                 float(self.config.byot_alpha), float(self.config.byot_beta))
        return total, out["logits"], terms

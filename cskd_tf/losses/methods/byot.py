"""Be Your Own Teacher, BYOT (Zhang et al., ICCV 2019), a baseline of Table 2.

The backbone's stages ``stage1``..``stageN`` (the naming contract of
:mod:`cskd_tf.models`) each except the last get an auxiliary classifier, the
BYOT paper's "bottleneck" branch as the reference code builds it
(luanyunteng/pytorch-be-your-own-teacher, models/resnet.py, ``branchBottleNeck``
and ``Multi_ResNet``). For stage k with maps of
(H_k, W_k, C_k), the deepest stage's maps of (H_N, W_N, ·) and the width D of
the deepest ``features``:

    stage_k → Conv1×1(D/4) → BN → ReLU
            → Conv s×s, stride s (D/4) → BN → ReLU     s = ⌈H_k/H_N⌉ (per axis)
            → Conv1×1(D) → BN → ReLU
            → global average pool = F_k (B, D) → Dense(C) = logits q_k

so each branch reaches the deepest stage's resolution and width (s is the
reference's 2^(N−k) on the usual power-of-two layouts: 8, 4, 2 for the four
stages of a CIFAR ResNet). The deepest classifier is the model's own
``classifier`` (q_N) on its ``features`` F_N.

Loss: the BYOT paper's three loss sources (cross-entropy from the labels, KL
toward the deepest classifier, L2 from the hints) summed over all N classifiers,
(1 − α)·CE + α·KL + λ·‖F_k − F_N‖² per classifier (the KD and hint terms vanish
for the deepest one), with the reference's reductions (train.py,
``kd_loss_function``, ``feature_loss_function``, ``total_loss``). Only the
paper's abstract and introduction could be read here; its equation numbers and
exact wording were not checked, the reference code was.

    L = (1 − α) · Σ_{k=1..N} CE(q_k, y)
        + α · T² · Σ_{k<N} mean_b KL( softmax(q̃_N / T) ‖ softmax(q_k / T) )
        + λ · Σ_{k<N} Σ_b Σ_d m_bd · (F_k,bd − F̃_N,bd)²,
    m_bd = 1[F_k,bd > 0 or F̃_N,bd > 0]

q̃_N, F̃_N: the deepest head's logits and features, detached (stop-gradient), so
the deepest head is trained by (1 − α)·CE only. CE and KL are averaged over the
batch (KL summed over classes); the feature hint is SUMMED over the batch and
the feature dimensions, as the reference's ``.sum()`` does, not averaged: with
the reference's λ = 1e-6 an averaged hint would be B times weaker. Both
features are ReLU outputs (≥ 0) on every backbone here, so the reference's mask m only drops
entries where both are 0, whose squared difference is 0 anyway; it is kept
for backbones whose ``features`` may be negative. Under R > 1 replicas the
train step divides the objective by R (cskd_model.py), so the per-replica hint
sum is multiplied by R here: the objective keeps the sum over the global batch.
The reference's KD term is the cross-entropy against the soft target,
i.e. this KL plus the target's entropy, a constant in the gradient; the logged
``aux_kd`` is the KL form (T² included).

Defaults (config.byot.*): T = 3, α = 0.1, λ = 1e-6 (``config.byot.beta``). The BYOT
paper gives α and λ in its loss but, as the reference's README says, no values
(the paper's experimental section could not be checked here); these are the
reference code's train.py defaults, with which its README reports CIFAR-100
ResNet-18 accuracies within 1.3 points of the paper's for every classifier.
Logged terms: ``ce`` (the deepest CE, unweighted), ``aux_ce`` (Σ of the shallow
CEs), ``aux_kd`` (T²·Σ KL) and ``hint``.

Differences from the reference: the branch convolutions have no bias (a BN
follows each, which cancels one); the deepest hint target is our
``features`` layer, the global average of stageN, as the reference's
``final_fea``. The auxiliary heads are created in :meth:`build` as layers of
the CSKDModel (attribute ``byot_heads``), so they train, get weight decay and
are checkpointed; inference and export use only the deepest classifier.

Cost: one forward and one backward pass per step plus the branches, ≈ 1.07×
the compute of CE for preact_resnet18 at 32 px and 100 classes (the branches'
convolutions and classifiers are 26.3 + 9.5 + 4.2 M multiply-adds against the
backbone's 555.5 M, counted from the built layers' shapes).
"""

import math
import re

import keras
import tensorflow as tf
from keras import layers

from cskd_tf.config import check_range
from cskd_tf.errors import ModelError
# The backbones' own blocks keep the branch's convolutions and batch norms
# (He-normal, PyTorch BN momentum) identical to the backbone's.
from cskd_tf.layers import bn_relu, conv
from cskd_tf.losses.kl import softened_kl_per_example
from cskd_tf.losses.methods.base import Method, cross_entropy, register


def stage_layers(backbone):
    """The backbone's ``stageK`` layers in order of K."""
    found = {int(m.group(1)): layer for layer in backbone.layers
             if (m := re.fullmatch(r"stage(\d+)", layer.name))}
    return [found[k] for k in sorted(found)]


def branch_stride(stage_shape, deepest_shape):
    """(s_h, s_w) that take a stage's (H, W) to the deepest stage's with "same" padding."""
    return tuple(max(1, math.ceil(int(size) / int(target)))
                 for size, target in zip(stage_shape[:2], deepest_shape[:2]))


def auxiliary_head(input_shape, deepest_shape, feature_dim, num_classes, index):
    """The BYOT bottleneck branch for stage ``index``: map → {"features", "logits"}.

    ``input_shape``: the stage's (H, W, C); ``deepest_shape``: the deepest stage's
    (H, W, ·); ``feature_dim``: D, the width of the deepest ``features``.
    """
    name = f"byot_head{index}"
    middle = max(1, feature_dim // 4)
    stride = branch_stride(input_shape, deepest_shape)
    inputs = keras.Input(shape=tuple(input_shape), name=f"{name}_input")
    x = bn_relu(conv(inputs, middle, 1, f"{name}_reduce_conv"), f"{name}_reduce")
    x = bn_relu(conv(x, middle, stride, f"{name}_down_conv", strides=stride), f"{name}_down")
    x = bn_relu(conv(x, feature_dim, 1, f"{name}_expand_conv"), f"{name}_expand")
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    features = layers.Activation("linear", dtype="float32", name=f"{name}_features")(x)
    logits = layers.Dense(num_classes, kernel_initializer="he_normal", dtype="float32",
                          name=f"{name}_classifier")(features)
    return keras.Model(inputs, {"features": features, "logits": logits}, name=name)


def feature_hint(features, target):
    """Σ_b Σ_d 1[f > 0 or t > 0] · (f − t)², target detached (the reference's reduction)."""
    features = tf.cast(features, tf.float32)
    target = tf.stop_gradient(tf.cast(target, tf.float32))
    active = tf.cast(tf.logical_or(features > 0, target > 0), tf.float32)
    return tf.reduce_sum(tf.square(features - target) * active)


def byot_loss(deep_logits, deep_features, aux_outputs, labels, temperature, alpha, beta,
              hint_scale=1.0):
    """(total, terms) of BYOT from the deepest head's outputs and the auxiliary ones.

    ``hint_scale`` multiplies the summed hint (the replica count under a strategy).
    """
    ce = cross_entropy(labels, deep_logits)
    aux_ce = aux_kl = hint = tf.constant(0.0, tf.float32)
    for out in aux_outputs:
        aux_ce += cross_entropy(labels, out["logits"])
        aux_kl += tf.reduce_mean(softened_kl_per_example(out["logits"], deep_logits, temperature))
        hint += feature_hint(out["features"], deep_features)
    aux_kd = aux_kl * (temperature ** 2)
    hint = hint * hint_scale
    total = (1.0 - alpha) * (ce + aux_ce) + alpha * aux_kd + beta * hint
    return total, {"ce": ce, "aux_ce": aux_ce, "aux_kd": aux_kd, "hint": hint}


@register("byot", display_name="BYOT", defaults=("temperature", "alpha", "beta"))
class BYOT(Method):
    """BYOT: T = ``temperature`` (3), α = ``alpha`` (0.1), λ of the hint = ``beta`` (1e-6)."""

    terms = ("ce", "aux_ce", "aux_kd", "hint")
    replaces_cross_entropy = "it applies the cross-entropy to every auxiliary classifier too"

    def __init__(self, temperature=3.0, alpha=0.1, beta=1e-6):
        """``temperature``: T of the KL toward the deepest head; ``alpha``: its weight α
        (CE gets 1 − α); ``beta``: λ of the summed feature hint."""
        self.temperature = check_range("byot.temperature", temperature, low=0, low_open=True)
        self.alpha = check_range("byot.alpha", alpha, low=0, high=1)
        self.beta = check_range("byot.beta", beta, low=0)

    @classmethod
    def from_experiment_config(cls, config):
        return cls(**config.byot)

    def get_config(self):
        return {"temperature": self.temperature, "alpha": self.alpha, "beta": self.beta}
    def build(self, model):
        backbone = model.backbone
        stages = stage_layers(backbone)
        if len(stages) < 2:
            raise ModelError(f"method 'byot' needs a backbone with at least two stage layers "
                             f"(stage1, stage2, ...); {backbone.name!r} has {len(stages)}")
        feature_dim = int(backbone.get_layer("features").output.shape[-1])
        num_classes = int(backbone.get_layer("classifier").output.shape[-1])
        deepest_shape = stages[-1].output.shape[1:]
        shallow = stages[:-1]
        for layer in stages:
            if any(d is None for d in layer.output.shape[1:3]):
                raise ModelError(f"method 'byot' needs a fixed input size (stage {layer.name!r} "
                                 f"of {backbone.name!r} has unknown height/width); build the "
                                 f"backbone with an explicit input_shape")
        # One pass yields the shallow stage maps and the deepest head's outputs.
        self.tap = keras.Model(backbone.input,
                               {"stages": [layer.output for layer in shallow],
                                "logits": backbone.get_layer("classifier").output,
                                "features": backbone.get_layer("features").output},
                               name=f"{backbone.name}_byot_tap")
        model.byot_heads = [auxiliary_head(layer.output.shape[1:], deepest_shape, feature_dim,
                                           num_classes, k)
                            for k, layer in enumerate(shallow, start=1)]

    def forward(self, model, images, draws):
        out = self.tap(model.normalize(images[0]), training=True)
        aux = [head(stage, training=True) for head, stage in zip(model.byot_heads, out["stages"])]
        return {"logits": out["logits"], "features": out["features"], "aux": aux}

    def loss(self, model, labels, outputs, detached, supervised):
        # The step divides the objective by the replica count; keep the hint a global-batch sum.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return byot_loss(outputs["logits"], outputs["features"], outputs["aux"], labels,
                         self.temperature, self.alpha, self.beta, hint_scale=float(replicas))

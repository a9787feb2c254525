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

Two variants (``variant``), both the paper's three loss sources (label CE, KL
toward the deepest classifier, a feature hint toward the deepest features) per
shallow classifier; docs/baselines.md (section BYOT) records the sources and the
choice. Sources read: the ICCV 2019 paper (abstract and introduction only);
luanyunteng/pytorch-be-your-own-teacher @ 8045079f, train.py lines 193–228 and
360–374 (an unofficial re-implementation of the ICCV version); the authors' code
of the later journal version, ArchipLab-LinfengZhang/pytorch-self-distillation-final
@ 47ca93b6, train.py lines 18–31 and 127–171.

``"iccv2019"`` (default): the ICCV definition as luanyunteng implements it.
The default departs from "prefer the official code" on purpose: the CS-KD
paper (code 2020-03-30) compares against the ICCV paper, and the authors'
official code appeared later (2020-06-09) with a different method (other
branches, adapted non-squared hint, deepest CE at weight 1).

    L = (1 − α) · Σ_{k=1..N} CE(q_k, y)
        + α · T² · Σ_{k<N} mean_b KL( softmax(q̃_N / T) ‖ softmax(q_k / T) )
        + λ · Σ_{k<N} Σ_b Σ_d m_bd · (F_k,bd − F̃_N,bd)²,
    m_bd = 1[F_k,bd > 0 or F̃_N,bd > 0]

``"official"``: the authors' released loss (journal version, train.py 147–163):

    L = CE(q_N, y)
        + Σ_{k<N} [ (1 − α) · CE(q_k, y) + α · mean_b KL( softmax(q̃_N / T) ‖ softmax(q_k / T) ) ]
        + λ · Σ_{k<N−1} ‖ A_k(F_k) − F̃_N ‖_F

no T² on the KL; the hint is the Frobenius norm over the whole batch (not
squared, torch.dist), through a learned linear layer A_k (Dense(D → D) with
bias, ``byot_head{k}_adapt``) per shallow head, and skipped for the head just
below the deepest (the official code skips ``outputs[1]``; its heads are listed
deepest first). Under R > 1 replicas the squared norm is summed over the
replicas before the square root, so the hint is the global batch's.

q̃_N, F̃_N: the deepest head's logits and features, detached (stop-gradient), so
the deepest head is trained by its CE only. CE and KL are averaged over the
batch (KL summed over classes); the "iccv2019" hint is SUMMED over the batch and
the feature dimensions, as luanyunteng's ``.sum()`` does, not averaged: with
its λ = 1e-6 an averaged hint would be B times weaker. Both
features are ReLU outputs (≥ 0) on every backbone here, so the mask m only drops
entries where both are 0, whose squared difference is 0 anyway; it is kept
for backbones whose ``features`` may be negative. Under R > 1 replicas the
train step divides the objective by R (cskd_model.py), so the per-replica hint
sum is multiplied by R here: the objective keeps the sum over the global batch.
Both codes take the KD term as the cross-entropy against the soft target,
i.e. this KL plus the target's entropy, a constant in the gradient; the logged
``aux_kd`` is the KL form (with T² in "iccv2019").

Defaults (config.byot.*; ``alpha``/``beta`` unset = the variant's): T = 3 for
both; "iccv2019" α = 0.1, λ = 1e-6 (luanyunteng's train.py lines 64–69; its
README reports CIFAR-100 ResNet-18 accuracies within 1.3 points of the paper's;
the paper gives no values); "official" α = 0.3, λ = 0.03 (the official
train.py's ``--loss_coefficient`` and ``--feature_loss_coefficient``). The
CS-KD paper's own BYOT settings could not be read. Logged terms: ``ce`` (the
deepest CE, unweighted), ``aux_ce`` (Σ of the shallow CEs), ``aux_kd`` (the
Σ KL, T²-scaled in "iccv2019") and ``hint``.

Deviations (docs/baselines.md): the branch convolutions have no bias (a BN
follows each, which cancels one); the deepest hint target is our ``features``
layer, the global average of stageN, as luanyunteng's ``final_fea``; the
logged KD term is the KL, not the soft-target CE (same gradient). "official"
runs on these bottleneck branches: the official code's own side branches
(depthwise-separable ``SepConv`` stacks with sigmoid attention masks) and its
4-head ensemble evaluation are not built here, so "official" is the official
loss on the ICCV paper's branch architecture.

The auxiliary heads (with A_k in "official") are created in :meth:`build` as
layers of the CSKDModel (attribute ``byot_heads``), so they train, get weight
decay and are checkpointed; inference and export use only the deepest classifier.

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

from cskd_tf.config import check_choice, check_range
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


def auxiliary_head(input_shape, deepest_shape, feature_dim, num_classes, index, adapt=False):
    """The BYOT bottleneck branch for stage ``index``: map → {"features", "logits"}
    (plus ``"adapted"`` = A_k(F_k), a Dense(D) with bias, when ``adapt``).

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
    outputs = {"features": features, "logits": logits}
    if adapt:
        outputs["adapted"] = layers.Dense(feature_dim, dtype="float32",
                                          name=f"{name}_adapt")(features)
    return keras.Model(inputs, outputs, name=name)


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


def batch_distance(features, target):
    """‖f − t‖_F over the batch and feature axes, target detached (torch.dist with p = 2).

    Under R > 1 replicas the squared distance is summed over the replicas first, so
    every replica holds the global batch's norm.
    """
    diff = tf.cast(features, tf.float32) - tf.stop_gradient(tf.cast(target, tf.float32))
    squared = tf.reduce_sum(tf.square(diff))
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        squared = replica.all_reduce(tf.distribute.ReduceOp.SUM, squared)
    # The epsilon keeps the gradient finite when the two coincide exactly.
    return tf.sqrt(squared + 1e-12)


def byot_official_loss(deep_logits, deep_features, aux_outputs, labels, temperature, alpha,
                       beta):
    """(total, terms) of the official BYOT loss; ``aux_outputs`` shallowest first, each with
    ``"adapted"`` features except the last one (the head just below the deepest)."""
    ce = cross_entropy(labels, deep_logits)
    aux_ce = aux_kd = hint = tf.constant(0.0, tf.float32)
    for out in aux_outputs:
        aux_ce += cross_entropy(labels, out["logits"])
        aux_kd += tf.reduce_mean(softened_kl_per_example(out["logits"], deep_logits, temperature))
    for out in aux_outputs[:-1]:
        hint += batch_distance(out["adapted"], deep_features)
    total = ce + (1.0 - alpha) * aux_ce + alpha * aux_kd + beta * hint
    return total, {"ce": ce, "aux_ce": aux_ce, "aux_kd": aux_kd, "hint": hint}


# α and λ (``beta``) of each variant, used when the constructor leaves them unset.
VARIANT_DEFAULTS = {"iccv2019": {"alpha": 0.1, "beta": 1e-6},
                    "official": {"alpha": 0.3, "beta": 0.03}}


@register("byot", display_name="BYOT",
          defaults=("temperature", "alpha", "beta", "variant"))
class BYOT(Method):
    """BYOT: ``variant`` ("iccv2019" or "official"), T = ``temperature`` (3), α = ``alpha``
    and λ of the hint = ``beta`` (None = the variant's: 0.1 and 1e-6, or 0.3 and 0.03)."""

    terms = ("ce", "aux_ce", "aux_kd", "hint")
    replaces_cross_entropy = "it applies the cross-entropy to every auxiliary classifier too"

    def __init__(self, temperature=3.0, alpha=None, beta=None, variant="iccv2019"):
        """``temperature``: T of the KL toward the deepest head; ``alpha``: its weight α
        (the shallow CEs get 1 − α); ``beta``: λ of the feature hint; ``variant``: which
        definition (module docstring)."""
        self.variant = check_choice("byot.variant", variant, tuple(VARIANT_DEFAULTS))
        defaults = VARIANT_DEFAULTS[self.variant]
        self.temperature = check_range("byot.temperature", temperature, low=0, low_open=True)
        self.alpha = check_range("byot.alpha", defaults["alpha"] if alpha is None else alpha,
                                 low=0, high=1)
        self.beta = check_range("byot.beta", defaults["beta"] if beta is None else beta, low=0)

    @classmethod
    def from_experiment_config(cls, config):
        return cls(**config.byot)

    def get_config(self):
        return {"temperature": self.temperature, "alpha": self.alpha, "beta": self.beta,
                "variant": self.variant}

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
        # "official" adapts every shallow head's features but the one just below the deepest.
        model.byot_heads = [auxiliary_head(layer.output.shape[1:], deepest_shape, feature_dim,
                                           num_classes, k,
                                           adapt=self.variant == "official" and k < len(shallow))
                            for k, layer in enumerate(shallow, start=1)]

    def forward(self, model, images, draws):
        out = self.tap(model.normalize(images[0]), training=True)
        aux = [head(stage, training=True) for head, stage in zip(model.byot_heads, out["stages"])]
        return {"logits": out["logits"], "features": out["features"], "aux": aux}

    def loss(self, model, labels, outputs, detached, supervised):
        # The step divides the objective by the replica count; keep the hint a global-batch sum.
        if self.variant == "official":
            return byot_official_loss(outputs["logits"], outputs["features"], outputs["aux"],
                                      labels, self.temperature, self.alpha, self.beta)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return byot_loss(outputs["logits"], outputs["features"], outputs["aux"], labels,
                         self.temperature, self.alpha, self.beta, hint_scale=float(replicas))

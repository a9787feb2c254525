"""Data-distortion guided self-distillation, DDGSD (Xu & Liu, AAAI 2019), Table 2.

Two independent distortions (augmentations) x₁, x₂ of the same image (views
``anchor`` and ``view2``) go through the same network, both with gradient:

    L = CE(f(x₁), y) + CE(f(x₂), y)
        + KL( softmax(f̃(x₂)) ‖ softmax(f(x₁)) )
        + KL( softmax(f̃(x₁)) ‖ softmax(f(x₂)) )
        + μ · MMD²(z₁, z₂)

f̃: the other branch's prediction, detached in each KL direction (each
branch is the teacher of the other); KLs summed over classes and averaged
over the batch, at temperature 1. MMD² is the linear-kernel maximum mean
discrepancy between the two batches of penultimate features,
‖mean_i z₁ᵢ − mean_i z₂ᵢ‖², with gradient to both branches; μ =
config.ddgsd_mmd_weight (5e-4). Logged terms: ``ce`` (the sum of both CEs),
``kl`` (the symmetric sum) and ``mmd``; ``loss = ce + kl + μ·mmd``.

The two views are run as two separate forward passes, so each keeps its own
batch-norm statistics. Cost: two forward and two backward passes per step,
about 2× the compute of CE.
"""

import tensorflow as tf

from cskd_tf.errors import ConfigError
from cskd_tf.losses.kl import softened_kl_per_example
from cskd_tf.losses.methods.base import Method, cross_entropy, register


def linear_mmd(features_a, features_b):
    """‖mean(a) − mean(b)‖², the (biased) MMD² with a linear kernel."""
    diff = (tf.reduce_mean(tf.cast(features_a, tf.float32), axis=0)
            - tf.reduce_mean(tf.cast(features_b, tf.float32), axis=0))
    return tf.reduce_sum(tf.square(diff))


@register("ddgsd")
class DataDistortionSelfDistillation(Method):
    views = ("anchor", "view2")
    terms = ("ce", "kl", "mmd")
    forward_passes = 2

    def __init__(self, config):
        super().__init__(config)
        self.mmd_weight = float(config.ddgsd_mmd_weight)
        if self.mmd_weight < 0:
            raise ConfigError(f"config.ddgsd_mmd_weight must be >= 0 "
                              f"(got {config.ddgsd_mmd_weight!r})")

    def loss(self, model, images, labels, targets):
        first = model.forward(images[0], training=True)
        second = model.forward(images[1], training=True)
        ce = cross_entropy(labels, first["logits"]) + cross_entropy(labels, second["logits"])
        kl = (tf.reduce_mean(softened_kl_per_example(first["logits"], second["logits"], 1.0))
              + tf.reduce_mean(softened_kl_per_example(second["logits"], first["logits"], 1.0)))
        mmd = linear_mmd(first["features"], second["features"])
        total = ce + kl + self.mmd_weight * mmd
        return total, first["logits"], {"ce": ce, "kl": kl, "mmd": mmd}

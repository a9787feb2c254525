"""Mixup (Zhang et al., ICLR 2018), Table 3.

Per batch, λ ~ Beta(α, α) (folded to max(λ, 1 − λ), see below) and a random
permutation π of the batch:

    x̃ = λ · x + (1 − λ) · x[π]
    L = λ · CE(f(x̃), y) + (1 − λ) · CE(f(x̃), y[π])

α = config.mixup.alpha (1.0). One λ per batch, as in the reference
implementation. λ is folded to max(λ, 1 − λ), which leaves the distribution
of mixed pairs unchanged (see :class:`~cskd_tf.losses.methods._mixing.MixSampler`)
and makes y the dominant label of every mixed image.

Training accuracy: measured on the *mixed* images' logits against the
dominant label y (no extra un-mixed forward pass), so it is lower than the
clean-image accuracy and not comparable with other methods' training
accuracy; validation/test metrics are on clean images as for every method.

Cost: one forward and one backward pass per step, as CE.

Sources (docs/baselines.md): Zhang et al., ICLR 2018 (one λ ~ Beta(α, α) per
batch and a batch permutation). The fold to max(λ, 1 − λ) is the one deviation,
distribution-preserving as said above.
"""

import tensorflow as tf

from cskd_tf.losses.methods._mixing import MixSampler, mix, mixup_cross_entropy
from cskd_tf.losses.methods.base import Method, register


@register("mixup", display_name="Mixup", defaults=("alpha",))
class Mixup(Method):
    """Mixup with α = ``alpha`` (1.0); ``seed`` of the λ and permutation draws (None: random)."""

    terms = ("ce", "mix_lambda")
    replaces_cross_entropy = "its supervised term is the λ-weighted cross-entropy of both labels"

    def __init__(self, alpha=1.0, seed=None):
        self.sampler = MixSampler(alpha, seed)

    @classmethod
    def from_experiment_config(cls, config):
        return cls(**config.mixup, seed=config.seed)

    def get_config(self):
        return {"alpha": self.sampler.alpha, "seed": self.sampler.seed}

    def build(self, model):
        self.sampler.build()

    def draws(self, model, images, labels):
        lam, perm = self.sampler.sample(tf.shape(images[0])[0])
        return {"lam": lam, "perm": perm, "mixed": mix(images[0], lam, perm)}

    def forward(self, model, images, draws):
        return model.forward(draws["mixed"], training=True)

    def loss(self, model, labels, outputs, detached, supervised):
        ce = mixup_cross_entropy(outputs["logits"], labels, detached["lam"], detached["perm"])
        return ce, {"ce": ce, "mix_lambda": detached["lam"]}

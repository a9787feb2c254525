"""Mixup + CS-KD, the combination of the paper's Table 3.

The paper combines the two by applying the class-wise regularizer to mixed
inputs and mixed labels. Here: per batch one λ ~ Beta(α, α) (folded to
max(λ, 1 − λ)) and one permutation π are drawn and applied to the anchors
*and* to their partners,

    x̃  = λ · x  + (1 − λ) · x[π]          mixed anchors
    x̃' = λ · x' + (1 − λ) · x'[π]         mixed partners

x'_i is a sample of x_i's class, so x̃'_i carries the same mixed label
(λ on y_i, 1 − λ on y_π(i)) as x̃_i, and the class-wise term matches the
predictions of two different inputs with that same mixed label:

    L = λ · CE(f(x̃), y) + (1 − λ) · CE(f(x̃), y[π])
        + λ_cls · T² · KL( softmax(f̃(x̃')/T) ‖ softmax(f(x̃)/T) )

f̃ detached (training mode, as in CS-KD). α = config.mixup.alpha, T =
config.temperature, λ_cls = config.lambda_cls (model.lambda_cls, so the
warm-up callback applies). Training accuracy is on the mixed anchors'
logits against the dominant label y, as for ``mixup``.

This is our reading of the paper's one-sentence description (the reference
code does not include it). Cost: two forward passes (one without gradient),
about 1.33× the compute of CE, as CS-KD.

Source (docs/baselines.md, combinations): the CS-KD paper's one-sentence
description; no other source exists.
"""

from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods._mixing import mix
from cskd_tf.losses.methods.base import ClassWiseTerm, register
from cskd_tf.losses.methods.mixup import Mixup


@register("mixup_cskd", display_name="Mixup + CS-KD")
class MixupCSKD(ClassWiseTerm):
    """Mixup's step plus the class-wise term on the equally mixed partners: T =
    ``temperature``, λ_cls = ``weight``, α = ``alpha``, ``seed`` of the mixing draws."""

    views = ("anchor", "partner")
    terms = ("ce", "cls", "mix_lambda")
    replaces_cross_entropy = Mixup.replaces_cross_entropy

    def __init__(self, temperature=4.0, weight=1.0, alpha=1.0, seed=None):
        super().__init__(temperature, weight)
        self.mixup = Mixup(alpha=alpha, seed=seed)

    @classmethod
    def from_experiment_config(cls, config):
        return cls(temperature=config.temperature, weight=config.lambda_cls,
                   **config.mixup, seed=config.seed)

    def get_config(self):
        return {"temperature": self.temperature, "weight": self.weight,
                **self.mixup.get_config()}

    def build(self, model):
        super().build(model)
        self.mixup.build(model)

    def draws(self, model, images, labels):
        return self.mixup.draws(model, images, labels)

    def forward(self, model, images, draws):
        return self.mixup.forward(model, images, draws)

    def detached_outputs(self, model, images, labels, draws):
        # The partner batch mixed with the anchors' λ and permutation.
        mixed_partner = mix(images[1], draws["lam"], draws["perm"])
        return {"partner_logits": model.forward(mixed_partner, training=True)["logits"]}

    def loss(self, model, labels, outputs, detached, supervised):
        ce, terms = self.mixup.loss(model, labels, outputs, detached, supervised)
        cls = class_wise_kl(outputs["logits"], detached["partner_logits"], self.temperature)
        return ce + self.class_wise_weight() * cls, {**terms, "cls": cls}

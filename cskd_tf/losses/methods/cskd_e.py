"""CS-KD-E: CS-KD plus a sample-wise term between two augmentations of the same image.

The paper's CS-KD-E (Yun et al., CVPR 2020, Table 2) adds the sample-wise
self-distillation of DDGSD (Xu & Liu, AAAI 2019) to CS-KD:

    L = CE(f(x), y)
        + λ   · T² · KL( softmax(f̃(x')/T) ‖ softmax(f(x)/T) )     class-wise (CS-KD)
        + λ_s · T² · KL( softmax(f̃(x̂)/T) ‖ softmax(f(x)/T) )     sample-wise

x' is a random training sample of x's class (view ``partner``), x̂ a second,
independent augmentation of the same image as x (view ``view2``), f̃ the same
network in training mode with its output detached. Defaults: T =
config.temperature = 4, λ = config.lambda_cls (1; 3 on fine-grained data),
λ_s = config.cskd_e.lambda_sample = 1. CE is the compiled loss.

Choices the paper leaves open, made here: the sample-wise term uses the same
temperature (and T² factor) as the class-wise one, and, like the partner,
the second view is a detached target (no cross-entropy on x̂), so only the
anchor pass carries gradient.

Cost: three forward passes per step, two of them without gradient (partner
and second view), about 1.67× the compute of CE.

Sources (docs/baselines.md, CS-KD-E): the CS-KD paper's description only (its
Section 4 could not be read; the reference code has no CS-KD-E). The other
reading, CS-KD plus the full DDGSD objective (CE on both views, symmetric KL,
MMD), cannot be excluded; this one keeps the partner's conventions.
"""

from cskd_tf.config import check_range
from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods.base import ClassWiseTerm, register


@register("cskd_e", display_name="CS-KD-E", defaults=("lambda_sample",))
class CSKDE(ClassWiseTerm):
    """CS-KD-E: T = ``temperature``, λ = ``weight``, λ_s = ``lambda_sample``."""

    views = ("anchor", "partner", "view2")
    terms = ("ce", "cls", "sample")

    def __init__(self, temperature=4.0, weight=1.0, lambda_sample=1.0):
        super().__init__(temperature, weight)
        self.lambda_sample = check_range("cskd_e.lambda_sample", lambda_sample, low=0)

    @classmethod
    def from_experiment_config(cls, config):
        return cls(temperature=config.temperature, weight=config.lambda_cls, **config.cskd_e)

    def get_config(self):
        return {"temperature": self.temperature, "weight": self.weight,
                "lambda_sample": self.lambda_sample}

    def detached_outputs(self, model, images, labels, draws):
        return {"partner_logits": model.forward(images[1], training=True)["logits"],
                "view2_logits": model.forward(images[2], training=True)["logits"]}

    def loss(self, model, labels, outputs, detached, supervised):
        logits = outputs["logits"]
        ce = supervised(labels, logits)
        cls = class_wise_kl(logits, detached["partner_logits"], self.temperature)
        sample = class_wise_kl(logits, detached["view2_logits"], self.temperature)
        total = ce + self.class_wise_weight() * cls + self.lambda_sample * sample
        return total, {"ce": ce, "cls": cls, "sample": sample}

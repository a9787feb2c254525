"""Class-wise self-knowledge distillation (Yun et al., CVPR 2020).

    L = CE(f(x), y) + λ · T² · KL( softmax(f̃(x')/T) ‖ softmax(f(x)/T) )

x' is a random training sample of x's class (the pair pipeline draws it),
f̃ the same network in training mode with its output detached. Defaults
T = 4 and λ = 1 (λ = 3 on the fine-grained datasets). λ lives in the
method's variable (``method.lambda_cls``) so a callback can warm it up
without retracing the step. CE is the compiled loss (``compile(loss=...)``).

Cost: one extra forward pass without gradient per step (the partner batch),
about 1.33× the compute of CE. As in the reference code, the partner pass
runs in training mode, so it also updates batch-norm statistics.

Source: the CS-KD reference code, alinlab/cs-kd @ b447f250 (train.py: ``KDLoss``
lines 95–107, KL summed over classes and the batch, / batch size, × T², T =
``--temp`` 4; the partner's logits detached). docs/baselines.md uses this
convention for every KL-based baseline.
"""

from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods.base import ClassWiseTerm, register


@register("cskd", display_name="CS-KD")
class CSKD(ClassWiseTerm):
    """CS-KD with T = ``temperature`` and λ = ``weight`` (the paper's 4 and 1)."""

    views = ("anchor", "partner")
    terms = ("ce", "cls")
    supports_sample_weight = True  # per-anchor weights on both terms

    @classmethod
    def from_experiment_config(cls, config):
        return cls(temperature=config.temperature, weight=config.lambda_cls)

    def get_config(self):
        return {"temperature": self.temperature, "weight": self.weight}

    def detached_outputs(self, model, images, labels, draws):
        return {"partner_logits": model.forward(images[1], training=True)["logits"]}

    def loss(self, model, labels, outputs, detached, supervised):
        logits = outputs["logits"]
        weights = detached.get("sample_weight")
        ce = supervised(labels, logits, weights)
        cls = class_wise_kl(logits, detached["partner_logits"], self.temperature,
                            sample_weight=weights)
        return ce + self.class_wise_weight() * cls, {"ce": ce, "cls": cls}

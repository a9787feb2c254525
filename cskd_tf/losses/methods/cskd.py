"""Class-wise self-knowledge distillation (Yun et al., CVPR 2020).

    L = CE(f(x), y) + λ · T² · KL( softmax(f̃(x')/T) ‖ softmax(f(x)/T) )

x' is a random training sample of x's class (the pair pipeline draws it),
f̃ the same network in training mode with its output detached. Defaults
T = 4 and λ = 1 (λ = 3 on the fine-grained datasets). λ lives in a model
variable (``model.lambda_cls``) so a callback can warm it up without
retracing the step.

Cost: one extra forward pass without gradient per step (the partner batch),
about 1.33× the compute of CE. As in the reference code, the partner pass
runs in training mode, so it also updates batch-norm statistics.
"""

from cskd_tf.config import check_range
from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods.base import Method, cross_entropy, register


@register("cskd")
class ClassWiseSelfKD(Method):
    views = ("anchor", "partner")
    terms = ("ce", "cls")
    supports_sample_weight = True  # per-anchor weights on both terms

    def __init__(self, temperature):
        self.temperature = check_range("temperature", temperature, low=0, low_open=True)

    @classmethod
    def from_config(cls, config):
        return cls(temperature=config.temperature)

    def hyperparameters(self):
        return {"temperature": self.temperature}

    def detached_outputs(self, model, images, labels):
        return {"partner_logits": model.forward(images[1], training=True)["logits"]}

    def loss(self, model, images, labels, detached):
        logits = model.forward(images[0], training=True)["logits"]
        weights = detached.get("sample_weight")
        ce = cross_entropy(labels, logits, sample_weight=weights)
        cls = class_wise_kl(logits, detached["partner_logits"], self.temperature,
                            sample_weight=weights)
        return ce + model.lambda_cls * cls, logits, {"ce": ce, "cls": cls}

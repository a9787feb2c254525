"""KD + CS-KD, the combination of the paper's Table 4.

    L = (1 − α) · CE(f(x), y) + α · T_kd² · KL( softmax(g(x)/T_kd) ‖ softmax(f(x)/T_kd) )
        + λ · T² · KL( softmax(f̃(x')/T) ‖ softmax(f(x)/T) )

i.e. the ``kd`` objective plus the CS-KD class-wise term: g the frozen
teacher (config.teacher_workdir; in the paper a DenseNet-121 trained with
CS-KD, student ResNet-10), x' a sample of x's class, f̃ the student detached.
T_kd = config.kd_temperature (4), α = config.kd_alpha (0.9), T =
config.temperature (4), λ = config.lambda_cls (model.lambda_cls).

Cost: one student forward/backward pass, one detached student pass (the
partner) and one teacher pass.
"""

from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods.base import register
from cskd_tf.losses.methods.kd import KnowledgeDistillation


@register("kd_cskd")
class KnowledgeDistillationClassWise(KnowledgeDistillation):
    views = ("anchor", "partner")
    terms = ("ce", "kd", "cls")
    forward_passes = 3

    def targets(self, model, images, labels):
        targets = super().targets(model, images, labels)
        targets["partner_logits"] = model.forward(images[1], training=True)["logits"]
        return targets

    def loss(self, model, images, labels, targets):
        total, logits, terms = super().loss(model, images, labels, targets)
        cls = class_wise_kl(logits, targets["partner_logits"], float(self.config.temperature))
        return total + model.lambda_cls * cls, logits, {**terms, "cls": cls}

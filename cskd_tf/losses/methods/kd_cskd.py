"""KD + CS-KD, the combination of the paper's Table 4.

    L = (1 − α) · CE(f(x), y) + α · T_kd² · KL( softmax(g(x)/T_kd) ‖ softmax(f(x)/T_kd) )
        + λ · T² · KL( softmax(f̃(x')/T) ‖ softmax(f(x)/T) )

i.e. the ``kd`` objective plus the CS-KD class-wise term: g the frozen
teacher (config.kd.teacher_workdir; in the paper a DenseNet-121 trained with
CS-KD, student ResNet-10), x' a sample of x's class, f̃ the student detached.
T_kd = config.kd.temperature (4), α = config.kd.alpha (0.9), T =
config.temperature (4), λ = config.lambda_cls (model.lambda_cls).

Cost: one student forward/backward pass, one detached student pass (the
partner) and one teacher pass.
"""

from cskd_tf.config import check_range
from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods.base import Method, register
from cskd_tf.losses.methods.kd import KnowledgeDistillation


@register("kd_cskd")
class KnowledgeDistillationClassWise(Method):
    views = ("anchor", "partner")
    terms = ("ce", "kd", "cls")
    needs_teacher = True

    def __init__(self, temperature, kd):
        """``temperature``: CS-KD's T; ``kd``: the ``kd`` method's hyperparameters
        (config.kd: temperature, alpha, teacher_workdir, teacher_model)."""
        self.temperature = check_range("temperature", temperature, low=0, low_open=True)
        self.kd = KnowledgeDistillation(**kd)

    @classmethod
    def from_config(cls, config):
        return cls(temperature=config.temperature, kd=config.kd.to_dict())

    def hyperparameters(self):
        return {"temperature": self.temperature, "kd": self.kd.hyperparameters()}

    # The teacher is the KD part's: named by config.kd, loaded by the trainer.
    @property
    def teacher_workdir(self):
        return self.kd.teacher_workdir

    @property
    def teacher_model(self):
        return self.kd.teacher_model

    @property
    def teacher(self):
        return self.kd.teacher

    @teacher.setter
    def teacher(self, teacher):
        self.kd.teacher = teacher

    def prepare_training(self, model, teacher=None):
        self.kd.prepare_training(model, teacher)

    def detached_outputs(self, model, images, labels):
        detached = self.kd.detached_outputs(model, images, labels)
        detached["partner_logits"] = model.forward(images[1], training=True)["logits"]
        return detached

    def loss(self, model, images, labels, detached):
        total, logits, terms = self.kd.loss(model, images, labels, detached)
        cls = class_wise_kl(logits, detached["partner_logits"], self.temperature)
        return total + model.lambda_cls * cls, logits, {**terms, "cls": cls}

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

Source (docs/baselines.md, combinations): the CS-KD paper's one-sentence
description (Table 4); the reference code has no KD + CS-KD; KD as in
:mod:`cskd_tf.losses.methods.kd`.
"""

from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods.base import ClassWiseTerm, register
from cskd_tf.losses.methods.kd import KD


@register("kd_cskd", display_name="KD + CS-KD")
class KDCSKD(ClassWiseTerm):
    """KD plus the class-wise term: T = ``temperature``, λ = ``weight`` (CS-KD's), T_kd =
    ``kd_temperature``, α = ``alpha`` and the teacher as for :class:`KD`."""

    views = ("anchor", "partner")
    terms = ("ce", "kd", "cls")
    needs_teacher = True

    def __init__(self, temperature=4.0, weight=1.0, kd_temperature=4.0, alpha=0.9,
                 teacher_workdir="", teacher_model=""):
        super().__init__(temperature, weight)
        self.kd = KD(temperature=kd_temperature, alpha=alpha, teacher_workdir=teacher_workdir,
                     teacher_model=teacher_model)

    @classmethod
    def from_experiment_config(cls, config):
        kd = dict(config.kd)
        return cls(temperature=config.temperature, weight=config.lambda_cls,
                   kd_temperature=kd.pop("temperature"), **kd)

    def get_config(self):
        kd = self.kd.get_config()
        return {"temperature": self.temperature, "weight": self.weight,
                "kd_temperature": kd.pop("temperature"), **kd}

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

    def detached_outputs(self, model, images, labels, draws):
        detached = self.kd.detached_outputs(model, images, labels, draws)
        detached["partner_logits"] = model.forward(images[1], training=True)["logits"]
        return detached

    def loss(self, model, labels, outputs, detached, supervised):
        total, terms = self.kd.loss(model, labels, outputs, detached, supervised)
        cls = class_wise_kl(outputs["logits"], detached["partner_logits"], self.temperature)
        return total + self.class_wise_weight() * cls, {**terms, "cls": cls}

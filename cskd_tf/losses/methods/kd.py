"""Knowledge distillation (Hinton et al., 2015) from a frozen teacher, Table 4.

    L = (1 − α) · CE(f(x), y) + α · T² · KL( softmax(g(x)/T) ‖ softmax(f(x)/T) )

g: the teacher, a frozen callable ``images -> logits`` handed to
:meth:`prepare_training` (the trainer loads it from config.kd.teacher_workdir, a
finished cskd-train workdir or a SavedModel directory, with
:func:`cskd_tf.training.teacher.teacher_for`), called with ``training=False``
on the same augmented batch as the student, outside the gradient tape.
T = config.kd.temperature (4), α = config.kd.alpha (0.9). The
KL is summed over classes and averaged over the batch; CE is the compiled loss.

Relation to ``keras.distillation`` (Keras 3.15): ``Distiller`` is a
``keras.Model`` wrapping teacher and student, a role ``CSKDModel`` already
fills (custom train step, coupled weight decay, partner views), so it is not
used. ``LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence())``
computes this very distillation term (softmax at T, KL, × T²) except that
``KLDivergence`` clips both distributions to [1e-7, 1], so it saturates once a
student probability falls below 1e-7; with its default string loss it applies
the KL to the raw scaled logits instead (a different quantity). The term is
therefore computed exactly in log space with
:func:`cskd_tf.losses.class_wise_kl` (same formula as CS-KD's term with the
teacher as target); tests/test_methods.py checks it equals
``LogitsDistillation`` where no probability is clipped and differs where
one is.

The method declares ``needs_teacher = True``; ``trainer.train`` loads the
teacher before training starts (so a bad teacher fails fast with a ModelError)
and evaluation or export of the finished student never does. A custom loop
must call ``prepare_training(model, teacher=...)`` itself; a step without a
teacher is a ModelError that says so.

Cost: one student forward/backward pass plus one teacher forward pass.

Sources (docs/baselines.md, KD): Hinton et al. (soft targets at T, × T², mixed
with the hard-label CE) and the CS-KD reference's ``KDLoss`` (alinlab/cs-kd @
b447f250, train.py lines 95–105), which has the same scale. T = 4 and α = 0.9
are the common CIFAR setting; the CS-KD paper's values could not be read.
Deviations: none.
"""

import tensorflow as tf

from cskd_tf.config import check_range
from cskd_tf.errors import ModelError
from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods.base import Method, cross_entropy, register


def kd_loss(logits, teacher_logits, labels, temperature, alpha, ce=None):
    """(1 − α)·CE + α·T²·KL(teacher ‖ student); returns (total, ce, kd). ``ce``: the
    supervised term when the caller has it (the compiled loss), else the cross-entropy."""
    ce = cross_entropy(labels, logits) if ce is None else ce
    kd = class_wise_kl(logits, teacher_logits, temperature)
    return (1.0 - alpha) * ce + alpha * kd, ce, kd


@register("kd", display_name="KD",
          defaults=("temperature", "alpha", "teacher_workdir", "teacher_model"))
class KD(Method):
    """KD from a frozen teacher: T = ``temperature`` (4), α = ``alpha`` (0.9)."""

    terms = ("ce", "kd")
    needs_teacher = True

    def __init__(self, temperature=4.0, alpha=0.9, teacher_workdir="", teacher_model=""):
        """``teacher_workdir``: a cskd-train workdir or SavedModel path; ``teacher_model``:
        the teacher's architecture if it differs from what the workdir says ("" = its own).
        The method never reads them itself: the trainer loads the teacher they name."""
        self.temperature = check_range("kd.temperature", temperature, low=0, low_open=True)
        self.alpha = check_range("kd.alpha", alpha, low=0, high=1)
        self.teacher_workdir = str(teacher_workdir or "")
        self.teacher_model = str(teacher_model or "")
        self.teacher = None

    @classmethod
    def from_experiment_config(cls, config):
        return cls(**config.kd)

    def get_config(self):
        return {"temperature": self.temperature, "alpha": self.alpha,
                "teacher_workdir": self.teacher_workdir, "teacher_model": self.teacher_model}
    def prepare_training(self, model, teacher=None):
        if teacher is None:
            raise ModelError(f"method {self.name!r} needs a teacher: pass "
                             "prepare_training(model, teacher=...) a frozen callable images -> "
                             "logits (cskd_tf.training.teacher.teacher_for builds it from "
                             "--config.kd.teacher_workdir)")
        self.teacher = teacher

    def teacher_logits(self, model, images):
        if self.teacher is None:
            raise ModelError(f"method {self.name!r} has no teacher yet; call "
                             "method.prepare_training(model, teacher=...) before training "
                             "(cskd-train does)")
        # Frozen whatever the callable is: no gradient, float32 like the student's loss.
        return tf.stop_gradient(tf.cast(self.teacher(images), tf.float32))

    def detached_outputs(self, model, images, labels, draws):
        return {"teacher_logits": self.teacher_logits(model, images[0])}

    def loss(self, model, labels, outputs, detached, supervised):
        logits = outputs["logits"]
        total, ce, kd = kd_loss(logits, detached["teacher_logits"], labels, self.temperature,
                                self.alpha, ce=supervised(labels, logits))
        return total, {"ce": ce, "kd": kd}

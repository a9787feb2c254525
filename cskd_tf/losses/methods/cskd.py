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

``pairing="in_batch"`` (``config.pairing``; docs/pairing.md): the batch of B
images is B/2 same-class pairs, images 2k and 2k + 1 being mates
(:mod:`cskd_tf.data.in_batch`), and every image is both an anchor and its
mate's target, from one forward pass:

    L = mean_i CE(f(x_i), y_i)
        + λ · T² · mean_i KL( softmax(sg(f(x_mate(i)))/T) ‖ softmax(f(x_i)/T) )

with sg the stop-gradient and mate(2k) = 2k + 1, mate(2k + 1) = 2k. No extra
pass: about the cost of CE.
"""

import tensorflow as tf

from cskd_tf.config import CHOICES, check_range
from cskd_tf.errors import ConfigError, ModelError
from cskd_tf.losses.kl import class_wise_kl
from cskd_tf.losses.methods.base import Method, cross_entropy, register


def pair_mates(logits):
    """Row i of the result is row mate(i) of ``logits``: rows 2k and 2k + 1 swapped."""
    batch = logits.shape[0]
    if batch is not None and batch % 2:
        raise ModelError(f"in-batch pairing needs an even batch of pairs side by side, got "
                         f"{batch} images; use cskd_tf.data.pair_dataset(..., "
                         "pairing='in_batch') or config.pairing='in_batch' for the data")
    classes = tf.shape(logits)[-1]
    swapped = tf.reverse(tf.reshape(logits, [-1, 2, classes]), axis=[1])
    return tf.reshape(swapped, tf.shape(logits))


@register("cskd")
class ClassWiseSelfKD(Method):
    views = ("anchor", "partner")
    terms = ("ce", "cls")
    supports_sample_weight = True  # per-anchor weights on both terms
    pairings = CHOICES["pairing"]

    def __init__(self, temperature, pairing="reference"):
        self.temperature = check_range("temperature", temperature, low=0, low_open=True)
        if pairing not in self.pairings:
            raise ConfigError(f"config.pairing={pairing!r} is not one of "
                              f"{', '.join(map(repr, self.pairings))}; set --config.pairing "
                              "to one of them")
        self.pairing = pairing
        if pairing == "in_batch":
            self.views = ("anchor",)  # mates arrive side by side in one batch

    @classmethod
    def from_config(cls, config):
        return cls(temperature=config.temperature, pairing=config.get("pairing", "reference"))

    def hyperparameters(self):
        return {"temperature": self.temperature, "pairing": self.pairing}

    def detached_outputs(self, model, images, labels):
        if self.pairing == "in_batch":
            return {}  # the targets come from the loss's own forward pass
        return {"partner_logits": model.forward(images[1], training=True)["logits"]}

    def loss(self, model, images, labels, detached):
        logits = model.forward(images[0], training=True)["logits"]
        # In-batch: the mates' logits, detached by class_wise_kl (no gradient to the target).
        targets = (pair_mates(logits) if self.pairing == "in_batch"
                   else detached["partner_logits"])
        weights = detached.get("sample_weight")
        ce = cross_entropy(labels, logits, sample_weight=weights)
        cls = class_wise_kl(logits, targets, self.temperature, sample_weight=weights)
        return ce + model.lambda_cls * cls, logits, {"ce": ce, "cls": cls}

"""Confidence penalty / maximum entropy (Pereyra et al., ICLR-W 2017), Table 1.

    L = CE(f(x), y) − β · H(p),   H(p) = − Σ_c p_c log p_c,   p = softmax(f(x))

averaged over the batch, natural log; β = config.max_entropy.beta (0.1).
Logged terms: ``ce`` and ``entropy`` (the batch mean of H, in nats).

Cost: one forward and one backward pass per step, as CE.

Sources (docs/baselines.md, Maximum entropy): Pereyra et al. (CE − β·H) and
Dubey et al., NeurIPS 2018 ("Maximum-Entropy Fine-Grained Classification", the
row's name in the CS-KD paper, the same CE − γ·H). Neither β for these data sets
nor the CS-KD paper's value could be read: β = 0.1 is a project default, not a
paper value. Deviations: none in form.
"""

import tensorflow as tf

from cskd_tf.config import check_range
from cskd_tf.losses.methods.base import Method, register


def mean_entropy(logits):
    """Batch mean of the softmax entropy in nats, exact in log space."""
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    return tf.reduce_mean(-tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1))


@register("max_entropy", display_name="Maximum-entropy", defaults=("beta",))
class MaxEntropy(Method):
    """Confidence penalty with β = ``beta`` (0.1); CE is the compiled loss."""

    terms = ("ce", "entropy")

    def __init__(self, beta=0.1):
        self.beta = check_range("max_entropy.beta", beta, low=0)

    @classmethod
    def from_experiment_config(cls, config):
        return cls(**config.max_entropy)

    def get_config(self):
        return {"beta": self.beta}

    def loss(self, model, labels, outputs, detached, supervised):
        logits = outputs["logits"]
        ce = supervised(labels, logits)
        entropy = mean_entropy(logits)
        return ce - self.beta * entropy, {"ce": ce, "entropy": entropy}

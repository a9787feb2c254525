"""AdaCos (Zhang et al., CVPR 2019): cosine logits with an adaptive scale, Table 1.

The head is ``"cosine"``: logits_ij = s · cos θ_ij, cos θ_ij the cosine between
the features of example i and the weight of class j (no bias, no margin). The
loss is plain cross-entropy on those logits. s is the *dynamic* AdaCos scale
(Zhang et al., Eq. 15-16), recomputed every step from the current batch
before the loss is taken:

    B_avg = (1/B) Σ_i Σ_{j≠y_i} exp(s_prev · cos θ_ij)
    θ_med = median_i θ_{i,y_i}        (lower median for even B, as torch.median)
    s     = log(B_avg) / cos(min(π/4, θ_med))

starting from the fixed AdaCos value s₀ = √2 · log(C − 1) for C classes. s is
not trained (no gradient flows through its update) and lives in the
classifier's non-trainable ``scale`` variable, so evaluation, checkpoints and
export use the last value. log(B_avg) is computed as a log-sum-exp, so it
cannot overflow; s is kept ≥ 1e-3 so the logits never collapse to 0 or flip
sign in a degenerate batch (never reached in normal training).

Under a multi-replica ``tf.distribute`` strategy each replica computes s from
its slice of the batch and the replicas' values are averaged, so all replicas
keep the same s (an approximation of s from the global batch).

Evaluation (``eval_scale``): "adaptive" (default) keeps s·cos θ with the last
s, the probabilities the model was trained to produce; "unit" returns the bare
cosines when not training (the head's ``unit_scale_at_inference``, saved with
the model), as 4uiiurz1's code evaluates. Accuracy and recall are the same
either way; ECE and NLL are not: at scale 1 no probability exceeds
e/(e + (C − 1)/e), 0.069 for C = 100, so a well-trained model shows a large ECE.

Sources (docs/baselines.md, section AdaCos): the AdaCos paper's dynamic
scale; no official code exists; 4uiiurz1/pytorch-adacos @ 35c086cc,
metrics.py lines 8–39, which this training step matches term for term (lower
median, the new s applied to the current batch, no gradient through s). The
CS-KD paper's AdaCos ECE could not be read, so which evaluation scale it used
is not known; "adaptive" is the default because it is the trained model.
Deviations: s is floored at 1e-3 and averaged across replicas (4uiiurz1 is
single-device).

Needs C ≥ 3 (s₀ = 0 for two classes). Cost: one forward and one backward
pass per step, as CE; the scale update is a few reductions over the logits.
"""

import math

import tensorflow as tf

from cskd_tf.config import check_choice
from cskd_tf.errors import ModelError
from cskd_tf.losses.methods.base import Method, cross_entropy, register

MIN_SCALE = 1e-3


def initial_scale(num_classes):
    """Fixed-AdaCos scale s₀ = √2 · log(C − 1)."""
    return math.sqrt(2.0) * math.log(num_classes - 1)


def adaptive_scale(cosine, labels, scale):
    """The dynamic AdaCos scale for a batch of cosines (B, C) given the previous s."""
    cosine = tf.clip_by_value(tf.cast(cosine, tf.float32), -1.0, 1.0)
    labels = tf.cast(labels, tf.int32)
    scale = tf.cast(scale, tf.float32)
    target = tf.one_hot(labels, tf.shape(cosine)[-1], on_value=True, off_value=False)
    non_target = tf.where(target, tf.constant(-math.inf, tf.float32), scale * cosine)
    batch = tf.cast(tf.shape(cosine)[0], tf.float32)
    log_b_avg = tf.reduce_logsumexp(non_target) - tf.math.log(batch)
    theta = tf.acos(tf.clip_by_value(tf.gather(cosine, labels, axis=1, batch_dims=1),
                                     -1.0 + 1e-7, 1.0 - 1e-7))
    theta_sorted = tf.sort(theta)
    theta_med = theta_sorted[(tf.shape(theta)[0] - 1) // 2]
    new_scale = log_b_avg / tf.cos(tf.minimum(tf.constant(math.pi / 4, tf.float32), theta_med))
    return tf.maximum(new_scale, MIN_SCALE)


@register("adacos", display_name="AdaCos", defaults=("eval_scale",))
class AdaCos(Method):
    """AdaCos: the scale adapts; ``eval_scale`` = "adaptive" (s·cos θ) or "unit" (cos θ) at
    evaluation."""

    head = "cosine"
    terms = ("ce", "scale")
    replaces_cross_entropy = ("its cross-entropy is taken on the adaptively rescaled cosine "
                              "logits it computes in the step")

    def __init__(self, eval_scale="adaptive"):
        self.eval_scale = check_choice("adacos.eval_scale", eval_scale, ("adaptive", "unit"))

    @classmethod
    def from_experiment_config(cls, config):
        return cls(**config.adacos)

    def get_config(self):
        return {"eval_scale": self.eval_scale}

    def build(self, model):
        classifier = model.backbone.get_layer("classifier")
        if not hasattr(classifier, "scale"):
            raise ModelError("method 'adacos' needs the cosine head (a classifier with a "
                             "'scale' variable); build the backbone with head='cosine'")
        if classifier.units < 3:
            raise ModelError(f"method 'adacos' needs at least 3 classes (its scale "
                             f"√2·log(C−1) is 0 for C={classifier.units}); use another method")
        classifier.scale.assign(initial_scale(classifier.units))
        classifier.unit_scale_at_inference = self.eval_scale == "unit"
        self.classifier = classifier

    def loss(self, model, labels, outputs, detached, supervised):
        scale = self.classifier.scale
        previous = tf.cast(tf.convert_to_tensor(scale), tf.float32)
        logits = outputs["logits"]
        cosine = tf.stop_gradient(logits) / previous
        new_scale = tf.stop_gradient(adaptive_scale(cosine, labels, previous))
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # Every replica must hold the same s: average the replicas' batch estimates.
            new_scale = replica.all_reduce(tf.distribute.ReduceOp.MEAN, new_scale)
        scale.assign(tf.cast(new_scale, scale.dtype))
        # The head computed s_prev·cos; rescale to s_new·cos (gradient flows through cos).
        logits = logits * (new_scale / previous)
        outputs["logits"] = logits  # the metrics see the rescaled logits, as before
        ce = cross_entropy(labels, logits)
        return ce, {"ce": ce, "scale": new_scale}

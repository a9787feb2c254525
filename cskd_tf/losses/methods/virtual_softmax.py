"""Virtual-softmax (Chen et al., NeurIPS 2018), a baseline of the paper's Table 1.

Training only, one virtual class is appended to the softmax whose logit is
‖W_y‖ · ‖z‖ for an example with label y and penultimate features z:

    L = − log  exp(W_yᵀz + b_y) / ( Σ_c exp(W_cᵀz + b_c) + exp(‖W_y‖·‖z‖) )

W (D × C) and b are the linear classifier's kernel and bias. The virtual
logit bounds W_yᵀz from above (Cauchy-Schwarz), so the model must push the
true class's logit past it, which enlarges the inter-class margin.
Evaluation and export use the ordinary C logits. Gradient flows through
both norms, as in the paper. Differences from the paper: our classifier keeps
its bias (the CS-KD reference head; the virtual logit has none), and the
norms are computed as √(Σx² + 1e-12) so a dead (all-zero) feature vector
has a finite gradient.

The logged ``ce`` is the plain C-way cross-entropy; ``loss`` is the
(C+1)-way objective. Cost: one forward and one backward pass, as CE.
"""

import tensorflow as tf

from cskd_tf.errors import ModelError
from cskd_tf.losses.methods.base import Method, cross_entropy, register


def _norm(x, axis):
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axis) + 1e-12)


def virtual_softmax_loss(logits, features, kernel, labels):
    """Mean (C+1)-way cross-entropy with the virtual logit ‖W_y‖·‖z‖ appended."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    virtual = (tf.gather(_norm(tf.cast(kernel, tf.float32), axis=0), labels)
               * _norm(tf.cast(features, tf.float32), axis=-1))
    augmented = tf.concat([logits, virtual[:, None]], axis=-1)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, augmented))


@register("virtual_softmax")
class VirtualSoftmax(Method):
    terms = ("ce",)

    def build(self, model):
        classifier = model.backbone.get_layer("classifier")
        if getattr(classifier, "bias", None) is None or not hasattr(classifier, "kernel"):
            raise ModelError("method 'virtual_softmax' needs the linear head (Dense classifier)")
        self.classifier = classifier

    def loss(self, model, images, labels, targets):
        out = model.forward(images[0], training=True)
        logits = out["logits"]
        total = virtual_softmax_loss(logits, out["features"], self.classifier.kernel, labels)
        return total, logits, {"ce": cross_entropy(labels, logits)}

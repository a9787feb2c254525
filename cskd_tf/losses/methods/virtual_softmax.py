"""Virtual-softmax (Chen et al., NeurIPS 2018), a baseline of the paper's Table 1.

Chen, Deng & Du, "Virtual Class Enhanced Discriminative Embedding Learning":
during training one virtual class is appended to the softmax. For an example
with label y and penultimate features z, the virtual class's weight is
W_virt = ‖W_y‖ · z / ‖z‖, so its logit is W_virtᵀz = ‖W_y‖ · ‖z‖, and the loss
is the (C+1)-way cross-entropy the paper trains with (the equation number in
the paper was not re-checked here):

    L = − log  exp(W_yᵀz) / ( Σ_{c=1..C} exp(W_cᵀz) + exp(‖W_y‖·‖z‖) )

W (D × C) is the kernel of a BIAS-FREE linear classifier, as the method is
defined: the method asks for the ``"linear_nobias"`` head
(:mod:`cskd_tf.models.heads`), so the model's logits are exactly W_cᵀz and
the virtual logit bounds the true one from above (Cauchy-Schwarz:
W_yᵀz ≤ ‖W_y‖·‖z‖). The model must push W_yᵀz towards that bound, which
enlarges the inter-class margin. Evaluation and export use the ordinary C
logits. Gradient flows through both norms (W_virt is a function of W_y and
z). The norms are computed as √(Σx² + 1e-12), so a dead (all-zero) feature
vector has a finite gradient; that changes the virtual logit by at most
~1e-6·‖W_y‖.

No hyper-parameters. The logged ``ce`` is the plain C-way cross-entropy;
``loss`` is the (C+1)-way objective. Cost: one forward and one backward
pass, as CE.

Sources (docs/baselines.md, Virtual-softmax): the paper's virtual class; no
official code exists. Read: taekwan-lee/Virtual-Softmax-TF @ 8a3716ba
(virtual_softmax_tf.py lines 4–32) and frechele/Virtual-Softmax-PyTorch @
b1868d76 (virtsm/models/modules.py lines 8–28). Deviations from the first: no
clip of the virtual logit to [1e-10, 15] (a numerical guard that also stops its
gradient past 15; the log-sum-exp here is stable without it) and the backbone's
kernel initializer. The second takes the norms over the whole batch, a bug not
followed.
"""

import keras
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


@register("virtual_softmax", display_name="Virtual-softmax")
class VirtualSoftmax(Method):
    """Virtual-softmax (no hyperparameters)."""

    terms = ("ce",)
    head = "linear_nobias"
    replaces_cross_entropy = "its supervised term is the (C+1)-way virtual-class cross-entropy"

    def build(self, model):
        classifier = model.backbone.get_layer("classifier")
        if (not isinstance(classifier, keras.layers.Dense)
                or getattr(classifier, "bias", None) is not None):
            raise ModelError("method 'virtual_softmax' needs a bias-free linear classifier; "
                             "build the backbone with head='linear_nobias'")
        self.classifier = classifier

    def loss(self, model, labels, outputs, detached, supervised):
        logits = outputs["logits"]
        total = virtual_softmax_loss(logits, outputs["features"], self.classifier.kernel, labels)
        return total, {"ce": cross_entropy(labels, logits)}

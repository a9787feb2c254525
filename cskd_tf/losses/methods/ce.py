"""Cross-entropy, the baseline of every table in the paper.

    L = −log softmax(f(x))_y

One forward and one backward pass per step.
"""

from cskd_tf.losses.methods.base import Method, cross_entropy, register


@register("ce")
class CrossEntropy(Method):
    supports_sample_weight = True

    def loss(self, model, images, labels, detached):
        logits = model.forward(images[0], training=True)["logits"]
        ce = cross_entropy(labels, logits, sample_weight=detached.get("sample_weight"))
        return ce, logits, {"ce": ce}

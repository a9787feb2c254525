"""Cross-entropy, the baseline of every table in the paper.

    L = −log softmax(f(x))_y

One forward and one backward pass per step.
"""

from cskd_tf.losses.methods.base import Method, cross_entropy, register


@register("ce")
class CrossEntropy(Method):
    def loss(self, model, images, labels, detached):
        logits = model.forward(images[0], training=True)["logits"]
        ce = cross_entropy(labels, logits)
        return ce, logits, {"ce": ce}

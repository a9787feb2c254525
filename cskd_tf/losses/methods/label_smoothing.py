"""Label smoothing (Szegedy et al., CVPR 2016), a baseline of the paper's Table 1.

    L = − Σ_c q_c · log softmax(f(x))_c,   q = (1 − ε) · onehot(y) + ε / C

ε = config.label_smoothing (0.1 in the paper's comparison), C the number of
classes (the uniform part includes the true class, as in
``keras.losses.CategoricalCrossentropy(label_smoothing=ε)`` and PyTorch).
The logged ``ce`` is the plain cross-entropy −log p_y, so it stays comparable
with the other methods; ``loss`` is the smoothed objective.

Cost: one forward and one backward pass per step, as CE.
"""

from cskd_tf.errors import ConfigError
from cskd_tf.losses.methods.base import Method, cross_entropy, register


@register("label_smoothing")
class LabelSmoothing(Method):
    terms = ("ce",)

    def __init__(self, config):
        super().__init__(config)
        self.epsilon = float(config.label_smoothing)
        if not 0.0 <= self.epsilon < 1.0:
            raise ConfigError(f"config.label_smoothing must be in [0, 1) for method "
                              f"'label_smoothing' (got {config.label_smoothing!r})")

    def loss(self, model, images, labels, targets):
        logits = model.forward(images[0], training=True)["logits"]
        smoothed = cross_entropy(labels, logits, label_smoothing=self.epsilon)
        return smoothed, logits, {"ce": cross_entropy(labels, logits)}

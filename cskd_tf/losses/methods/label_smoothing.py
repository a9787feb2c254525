"""Label smoothing (Szegedy et al., CVPR 2016), a baseline of the paper's Table 1.

    L = − Σ_c q_c · log softmax(f(x))_c,   q = (1 − ε) · onehot(y) + ε / C

ε = config.label_smoothing.epsilon (0.1 in the paper's comparison), C the number of
classes (the uniform part includes the true class, as in
``keras.losses.CategoricalCrossentropy(label_smoothing=ε)`` and PyTorch).
The logged ``ce`` is the plain cross-entropy −log p_y, so it stays comparable
with the other methods; ``loss`` is the smoothed objective.

Cost: one forward and one backward pass per step, as CE.

Sources (docs/baselines.md, Label smoothing): Szegedy et al., section on
label-smoothing regularisation (u uniform over all K classes, ε = 0.1 on
ImageNet). winycg/Self-KD-Lib @ ede3062d spreads ε over the C − 1 wrong classes
instead (true class 0.900 vs 0.901 at ε 0.1, C 100), not followed. The CS-KD
paper's ε could not be read; 0.1 is a project default. Deviations: none.
"""

from cskd_tf.config import check_range
from cskd_tf.losses.methods.base import Method, cross_entropy, register


@register("label_smoothing", display_name="Label-smoothing", defaults=("epsilon",))
class LabelSmoothing(Method):
    """Label smoothing with ε = ``epsilon`` (the paper's comparison: 0.1)."""

    terms = ("ce",)
    replaces_cross_entropy = "its supervised term is the smoothed cross-entropy"

    def __init__(self, epsilon=0.1):
        self.epsilon = check_range("label_smoothing.epsilon", epsilon, low=0, high=1,
                                   high_open=True)

    @classmethod
    def from_experiment_config(cls, config):
        return cls(**config.label_smoothing)

    def get_config(self):
        return {"epsilon": self.epsilon}

    def loss(self, model, labels, outputs, detached, supervised):
        logits = outputs["logits"]
        smoothed = cross_entropy(labels, logits, label_smoothing=self.epsilon)
        return smoothed, {"ce": cross_entropy(labels, logits)}

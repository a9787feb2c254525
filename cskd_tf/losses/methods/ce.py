"""Cross-entropy, the baseline of every table in the paper.

    L = −log softmax(f(x))_y

(the compiled loss; ``compile(loss=...)`` may replace it). One forward and one
backward pass per step.

Source: the CS-KD reference code's cross-entropy baseline (alinlab/cs-kd @
b447f250, train.py, ``nn.CrossEntropyLoss``, batch mean); see docs/baselines.md.
"""

from cskd_tf.losses.methods.base import Method, register


@register("ce", display_name="Cross-entropy")
class CrossEntropy(Method):
    supports_sample_weight = True

"""Mixup's sampling and loss, shared by the ``mixup`` and ``mixup_cskd`` methods.

Not a method itself (nothing is registered here).
"""

import keras
import tensorflow as tf

from cskd_tf.config import check_range


class MixSampler:
    """Draws one mixing coefficient and one permutation per batch.

    λ ~ Beta(α, α) is folded to max(λ, 1 − λ) ≥ 0.5, so the mixed image is
    dominated by the un-permuted example and training accuracy against y is
    the accuracy on the dominant label. Folding does not change the
    distribution of mixed pairs: mixing (x_i, x_π(i)) with 1 − λ is mixing
    (x_j, x_π⁻¹(j)) with λ, and π⁻¹ is as uniform as π.
    """

    def __init__(self, alpha, seed):
        self.alpha = check_range("mixup.alpha", alpha, low=0, low_open=True)
        self.seed = None if seed is None else int(seed)  # None: a random seed per build
        self.generator = None

    def build(self):
        # Created eagerly, outside any traced function.
        self.generator = keras.random.SeedGenerator(self.seed)

    def sample(self, batch_size):
        """(λ as a float32 scalar, a permutation of range(batch_size))."""
        lam = keras.random.beta((), self.alpha, self.alpha, dtype="float32", seed=self.generator)
        lam = tf.maximum(lam, 1.0 - lam)
        perm = keras.random.shuffle(tf.range(batch_size), seed=self.generator)
        return lam, perm


def mix(images, lam, perm):
    """λ · x + (1 − λ) · x[π]."""
    images = tf.convert_to_tensor(images)
    lam = tf.cast(lam, images.dtype)
    return lam * images + (1.0 - lam) * tf.gather(images, perm)


def mixup_cross_entropy(logits, labels, lam, perm):
    """λ · CE(f(x̃), y) + (1 − λ) · CE(f(x̃), y[π]), averaged over the batch."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    ce_a = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    ce_b = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.gather(labels, perm), logits)
    lam = tf.cast(lam, tf.float32)
    return tf.reduce_mean(lam * ce_a + (1.0 - lam) * ce_b)

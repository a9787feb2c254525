"""The class-wise regularizer of CS-KD.

Yun et al., "Regularizing Class-wise Predictions via Self-knowledge
Distillation", CVPR 2020, Eq. (1)-(2): for an anchor x and another sample x'
of the same class,

    L_cls(x, x'; θ, T) = T² · KL( P(y | x'; θ̃, T) ‖ P(y | x; θ, T) )
                       = T² · Σ_c p'_c · (log p'_c − log p_c),

    p  = softmax(f(x) / T),   p' = softmax(f(x') / T),

where θ̃ is a fixed copy of θ: no gradient flows through the partner side.
The KL is summed over classes and averaged over the anchors of the batch,
then multiplied by T² so its gradient scale does not shrink with T
(Hinton et al., 2015). λ is applied by the caller.
"""

from __future__ import annotations

import tensorflow as tf


def class_wise_kl(logits, partner_logits, temperature, sample_weight=None):
    """T² · mean_batch KL(softmax(partner/T) ‖ softmax(logits/T)).

    ``sample_weight`` (batch,) weights each anchor: T² · mean_i(w_i · KL_i).

    Both inputs are (batch, classes) logits; ``partner_logits`` is detached.
    The computation stays in log space (log-softmax on both sides), so it is
    exact for logits of any magnitude: a probability that underflows to 0
    contributes 0·(−∞ − …) = 0 through ``p' · log p'`` computed as
    ``exp(log p') · log p'``, never NaN.

    ``keras.distillation.LogitsDistillation`` is the same formula for small
    logits but clips both distributions to [1e-7, 1] before the KL, so it
    saturates once a student probability drops below 1e-7 (see
    tests/test_losses.py); that is why this function does not build on it.
    """
    temperature = tf.cast(temperature, tf.float32)
    kl = softened_kl_per_example(logits, partner_logits, temperature)
    if sample_weight is not None:
        kl = kl * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    return tf.reduce_mean(kl) * temperature**2


def softened_kl_per_example(student_logits, teacher_logits, temperature):
    """KL(softmax(teacher/T) ‖ softmax(student/T)) per example, teacher detached.

    The building block shared by KD-style terms (KD, BYOT, DDGSD, CS-KD-E).
    """
    student_logits = tf.cast(student_logits, tf.float32)
    teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
    log_p = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    log_q = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    return tf.reduce_sum(tf.exp(log_q) * (log_q - log_p), axis=-1)

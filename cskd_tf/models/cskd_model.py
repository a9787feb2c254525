"""CSKDModel: a keras.Model whose train step applies a training method's loss.

Any backbone from :mod:`cskd_tf.models` (outputs ``{"logits", "features"}``)
is wrapped with the input normalization and a method from
:mod:`cskd_tf.losses`. ``model.fit`` then runs that method's step:

    targets = method.targets(...)            # e.g. the CS-KD partner pass
    with GradientTape:
        loss, logits, terms = method.loss(...)
        objective = loss + wd/2 · Σ‖θ‖²      # coupled weight decay, as torch SGD
    optimizer.apply(∇objective)

Weight decay enters the objective (not the optimizer) because the paper's
recipe is PyTorch's SGD, whose weight decay is added to the gradient before
momentum; Keras' ``weight_decay`` argument is the decoupled variant. The
logged ``loss`` excludes it, as the reference code's logs do.

Under a ``tf.distribute`` strategy with R replicas the step runs once per
replica on its slice of the global batch and the objective is divided by R
before the gradient (the optimizer sums the replicas' gradients), so training
follows the gradient of the global-batch mean; the logged metrics are
global-batch values too (see cskd_tf/training/distribute.py).

``call(x)`` returns logits, so ``predict``, export and any Keras tool treat it
as an ordinary classifier; ``embed(x)`` returns the penultimate features.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cskd_tf.losses import Method, cross_entropy

# Keras' own test for "step outputs are reduced across workers" (private: see compat).
from cskd_tf.compat import reduces_step_outputs_across_workers as _reduces_across_workers


@keras.saving.register_keras_serializable(package="cskd_tf")
class Normalize(keras.layers.Layer):
    """(x − mean) / std per channel, for inputs already scaled to [0, 1]."""

    def __init__(self, mean=(0.5,), std=(0.5,), **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def call(self, x):
        x = tf.cast(x, self.compute_dtype)
        mean = tf.constant(self.mean, dtype=self.compute_dtype)
        std = tf.constant(self.std, dtype=self.compute_dtype)
        return (x - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


class CSKDModel(keras.Model):
    """A backbone trained with a method's loss through ``model.fit``.

    Args:
      backbone: functional model returning ``{"logits", "features"}``.
      method: a :class:`cskd_tf.losses.Method`; ``None`` means cross-entropy.
      mean, std: per-channel input statistics in [0, 1] units.
      lambda_cls: initial λ; a non-trainable variable the callback may change.
      weight_decay: coupled L2 coefficient (the paper's 1e-4).
    """

    def __init__(self, backbone, method: Method | None = None, mean=(0.5,), std=(0.5,),
                 lambda_cls=1.0, weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        if method is None:
            from cskd_tf.losses import get_method
            from cskd_tf.config import default_config
            method = get_method("ce", default_config())
        self.backbone = backbone
        self.method = method
        self.normalize = Normalize(mean, std, name="normalize")
        self.weight_decay = float(weight_decay)
        self.lambda_cls = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(lambda_cls),
            trainable=False, name="lambda_cls", dtype="float32")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = [keras.metrics.Mean(name=t) for t in method.terms if t != "loss"]
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.top5_metric = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")
        method.build(self)

    # ----------------------------------------------------------- forward passes
    def forward(self, x, training=False):
        """``{"logits", "features"}`` for a batch of [0, 1] images."""
        return self.backbone(self.normalize(x), training=training)

    def call(self, x, training=False):
        if isinstance(x, (tuple, list)):  # a paired batch: classify the anchors
            x = x[0]
        return self.forward(x, training=training)["logits"]

    def embed(self, x, training=False):
        return self.forward(x, training=training)["features"]

    # ------------------------------------------------------------------ metrics
    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers, self.accuracy_metric, self.top5_metric]

    def _update_metrics(self, loss, labels, logits, terms):
        self.loss_tracker.update_state(loss)
        for tracker in self.term_trackers:
            if tracker.name in terms:
                tracker.update_state(terms[tracker.name])
        self.accuracy_metric.update_state(labels, logits)
        self.top5_metric.update_state(labels, logits)
        results = {m.name: m.result() for m in self.metrics}
        if _reduces_across_workers(tf.distribute.get_strategy()):
            # Keras 3.15 averages step outputs across workers with reduce(axis=0), which
            # fails on scalars (tensorflow/tensorflow#72388); one-element vectors reduce to
            # the same scalar. The values are already global: metric variables sum their
            # updates over all replicas.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras 3.15 first reduces a whole input batch across replicas
        # to build the model symbolically; MultiWorkerMirroredStrategy rejects the nested
        # ((anchor, partner), label) batch. A built model with a built optimizer (what
        # trainer.build_model and compile_model make) has nothing left to build.
        built = all(layer.built for layer in self._flatten_layers())
        if built and (self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # -------------------------------------------------------------------- steps
    def train_step(self, data):
        images, labels = data[0], data[1]
        if not isinstance(images, (tuple, list)):
            images = (images,)
        targets = self.method.detached_outputs(self, images, labels)
        with tf.GradientTape() as tape:
            loss, logits, terms = self.method.loss(self, images, labels, targets)
            objective = loss
            if self.weight_decay:
                objective += 0.5 * self.weight_decay * tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                     for v in self.trainable_variables])
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:
                # The optimizer sums the replicas' gradients (all-reduce SUM), and every
                # term here is a mean over this replica's batch slice (the class-wise KL
                # over its anchors): dividing by the replica count makes that sum the
                # gradient of the global-batch mean. Weight decay, the same on every
                # replica, is then counted once.
                objective = objective / replicas
            scaled = self.optimizer.scale_loss(objective)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_metrics(loss, labels, logits, terms)

    def test_step(self, data):
        images, labels = data[0], data[1]
        if isinstance(images, (tuple, list)):
            images = images[0]
        logits = self.forward(images, training=False)["logits"]
        ce = cross_entropy(labels, logits)
        return self._update_metrics(ce, labels, logits, {"ce": ce})

    def get_config(self):
        return {
            "name": self.name,
            "method": self.method.get_config(),
            "mean": self.normalize.mean,
            "std": self.normalize.std,
            "weight_decay": self.weight_decay,
        }

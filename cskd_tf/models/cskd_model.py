"""CSKDModel: any Keras classifier trained with a method's loss through ``model.fit``.

The wrapped model is either a backbone of :mod:`cskd_tf.models` (outputs
``{"logits", "features"}``) or any functional/Sequential Keras model whose
output is the logits (see :mod:`cskd_tf.models.classifier_view` for where the
penultimate features come from). ``model.fit`` then runs the method's step:

    detached = method.detached_outputs(...)  # e.g. the CS-KD partner pass, no gradient
    with GradientTape:
        loss, logits, terms = method.loss(...)
        loss = compute_loss(...)             # + Σ model.losses (layer regularizers)
        objective = loss + wd/2 · Σ‖θ‖²      # coupled weight decay, as torch SGD
    optimizer.apply(∇objective)
    compute_metrics(...)                     # own trackers + compile(metrics=[...])

Weight decay enters the objective (not the optimizer) because the paper's
recipe is PyTorch's SGD, whose weight decay is added to the gradient before
momentum; Keras' ``weight_decay`` argument is the decoupled variant. The
logged ``loss`` excludes it, as the reference code's logs do, but includes
``model.losses``, as Keras' own logs do.

The compile contract: ``compile(loss=...)`` and ``loss_weights`` raise (the
method is the loss); ``metrics`` are updated with (labels, anchor logits),
``weighted_metrics`` also with the sample weights; a metric with
``takes_features = True`` (:class:`cskd_tf.evaluation.RecallAtK`) gets the
penultimate features instead of the logits (one extra inference pass per
training step when such a metric is compiled).

Sample weights (``fit(sample_weight=...)``, ``class_weight``) weight each anchor
in the CE and the class-wise term: the step uses ŵ_i = w_i / mean(w) over the
global batch, so every batch mean becomes Σ w_i·ℓ_i / Σ w_i (the convention of
PyTorch's weighted cross-entropy), and a weight of 0 removes an example from the
loss exactly as if it were not in the batch (its partner pass and batch-norm
statistics aside). Only methods with ``supports_sample_weight`` accept them.

Under a ``tf.distribute`` strategy with R replicas the step runs once per
replica on its slice of the global batch and the objective is divided by R
before the gradient (the optimizer sums the replicas' gradients), so training
follows the gradient of the global-batch mean; the logged metrics are
global-batch values too (see cskd_tf/training/distribute.py).

``call(x)`` returns logits, so ``predict``, export and any Keras tool treat it
as an ordinary classifier; ``embed(x)`` returns the penultimate features.
``model.save("m.keras")`` / ``keras.models.load_model`` round-trip the wrapped
model, the method (by name and config) and the optimizer state.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cskd_tf.errors import CSKDError, ModelError
from cskd_tf.losses import METHODS, Method, cross_entropy
from cskd_tf.models.classifier_view import classifier_view, returns_contract

# Keras' own test for "step outputs are reduced across workers" (private: see compat).
from cskd_tf.compat import all_sublayers
from cskd_tf.compat import reduces_step_outputs_across_workers as _reduces_across_workers


@keras.saving.register_keras_serializable(package="cskd_tf")
class Normalize(keras.layers.Layer):
    """(x − mean) / std per channel; ``mean=std=None`` passes inputs through unchanged."""

    def __init__(self, mean=(0.5,), std=(0.5,), **kwargs):
        super().__init__(**kwargs)
        if (mean is None) != (std is None):
            raise ModelError("give both mean and std (per-channel input statistics), or "
                             "neither for no input normalisation")
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)

    def call(self, x):
        if self.mean is None:
            return x
        x = tf.cast(x, self.compute_dtype)
        mean = tf.constant(self.mean, dtype=self.compute_dtype)
        std = tf.constant(self.std, dtype=self.compute_dtype)
        return (x - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def method_from_config(config: dict) -> Method:
    """Rebuilds a method by registered name (:data:`cskd_tf.losses.METHODS`)."""
    config = dict(config)
    name = config.pop("name")
    if name not in METHODS:
        raise ModelError(f"unknown method {name!r} in a saved CSKDModel; import the module "
                         f"that registers it before keras.models.load_model")
    return METHODS[name](**config)


@keras.saving.register_keras_serializable(package="cskd_tf")
class CSKDModel(keras.Model):
    """A classifier trained with a method's loss through ``model.fit``.

    Args:
      backbone: a functional or Sequential Keras model whose output is the logits
        (batch, classes), or one returning ``{"logits", "features"}`` (the backbones of
        :mod:`cskd_tf.models`).
      method: a :class:`cskd_tf.losses.Method`, e.g.
        ``cskd_tf.losses.get_method("cskd", cskd_tf.config.default_config())``. Required.
      mean, std: per-channel input statistics, in the units of the input images; None (the
        default) = no normalisation (e.g. keras.applications models normalise themselves).
      lambda_cls: initial λ; a non-trainable variable the callback may change.
      weight_decay: coupled L2 coefficient (the paper's 1e-4).
      feature_layer: name of the layer whose output is the feature vector; default: the
        input of the last Dense layer. Ignored for backbones returning the dict.
      class_names: the label of each class (what ``export`` serves); default "0", "1", ...
      pixel_max: the input value of a full pixel: 1.0 ([0, 1], cskd-train) or 255.0 (Keras'
        image loaders; ``pairs.pixel_max``); ``export`` scales served uint8 to it.
    """

    def __init__(self, backbone, method: Method | None = None, mean=None, std=None,
                 lambda_cls=1.0, weight_decay=0.0, feature_layer=None, class_names=None,
                 pixel_max=None, **kwargs):
        # Set before Keras' __init__ (which may read `metrics`), without Keras tracking.
        object.__setattr__(self, "_feature_metrics", [])
        object.__setattr__(self, "_user_metrics", {})
        super().__init__(**kwargs)
        if method is None:
            raise ModelError("CSKDModel needs method=..., e.g. cskd_tf.losses.get_method('cskd', "
                             "cskd_tf.config.default_config())")
        if not isinstance(method, Method):
            raise ModelError(f"method={method!r} is not a cskd_tf.losses.Method; build one with "
                             "cskd_tf.losses.get_method(name, config)")
        self.backbone = backbone
        self.feature_layer = feature_layer or None
        self._plain = not returns_contract(backbone)
        # The view shares the backbone's layers; set without Keras tracking so every weight
        # is tracked (and saved) once, under `backbone`.
        view = classifier_view(backbone, self.feature_layer) if self._plain else backbone
        object.__setattr__(self, "_net", view)
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
        # Serving facts (see export); tuples, so Keras does not track them as layers' lists.
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        self.pixel_max = None if pixel_max is None else float(pixel_max)
        self._build_method()
        self.built = True  # every variable exists now; nothing is built lazily

    def _build_method(self):
        method = self.method
        try:
            method.build(self)
        except CSKDError:
            raise
        except (ValueError, AttributeError, KeyError) as error:
            if not self._plain:
                raise
            raise ModelError(f"method {method.name!r} needs parts of a cskd_tf.models backbone "
                             f"({str(error).splitlines()[0] if str(error) else error!r}); "
                             "build one with cskd_tf.models.build(...) or use a method that "
                             "needs only logits, such as 'cskd' or 'ce'") from None
        if self._plain and method.needs_teacher:
            raise ModelError(f"method {method.name!r} reads its teacher's facts from a "
                             "cskd_tf.models backbone; build the student with "
                             "cskd_tf.models.build(...) or use 'cskd' or 'ce'")

    # ----------------------------------------------------------- forward passes
    def forward(self, x, training=False):
        """``{"logits", "features"}`` for a batch of images."""
        if isinstance(x, (tuple, list)):  # a paired batch: the anchors
            x = x[0]
        return self._net(self.normalize(x), training=training)

    def call(self, x, training=False):
        return self.forward(x, training=training)["logits"]

    def embed(self, x, training=False):
        return self.forward(x, training=training)["features"]

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, **kwargs):
        """Keras' compile; ``loss`` and ``loss_weights`` must stay None (the method is the loss)."""
        if loss is not None:
            raise ModelError(f"CSKDModel.compile(loss={loss!r}) is not supported: the method "
                             f"({self.method.name!r}) defines the loss; drop loss= and choose the "
                             "loss with CSKDModel(method=...)")
        if loss_weights is not None:
            raise ModelError("CSKDModel.compile(loss_weights=...) is not supported: the model "
                             "has one output and the method weights its own terms")
        features, plain = _split_feature_metrics(metrics)
        weighted_features, weighted_plain = _split_feature_metrics(weighted_metrics)
        super().compile(optimizer=optimizer, metrics=plain, weighted_metrics=weighted_plain,
                        **kwargs)
        object.__setattr__(self, "_user_metrics",
                           {"metrics": metrics, "weighted_metrics": weighted_metrics})
        feature_metrics = ([(m, False) for m in features]
                           + [(m, True) for m in weighted_features])
        object.__setattr__(self, "_feature_metrics", feature_metrics)
        dim = self._net.output["features"].shape[-1]
        for metric, _ in feature_metrics:
            # Create the metric's state now, eagerly (Keras builds compiled metrics the same
            # way before the first step): an empty batch of `dim`-wide features.
            if dim is not None:
                metric.update_state(tf.zeros([0], tf.int32), tf.zeros([0, dim], tf.float32))
                metric.reset_state()

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:  # the feature metrics went to compile() too
            for key, value in self._user_metrics.items():
                config[key] = keras.saving.serialize_keras_object(value)
        return config

    def compile_from_config(self, config):
        # Keras skips a custom compile() when loading; this one takes Keras' own arguments.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)  # so saved slots load into it

    # ------------------------------------------------------------------ metrics
    @property
    def metrics(self):
        own = [self.loss_tracker, *self.term_trackers, self.accuracy_metric, self.top5_metric]
        if self.compiled and self._compile_metrics is not None:
            own.append(self._compile_metrics)
        return own + [metric for metric, _ in self._feature_metrics]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' loss hook: the step's loss plus ``model.losses``.

        ``y_pred`` is what the step computed, ``{"loss", "logits", ...terms}`` (the method's
        loss in training, the cross-entropy in evaluation), already sample-weighted.
        """
        loss = tf.cast(y_pred["loss"], tf.float32)
        extra = [tf.reduce_sum(tf.cast(value, tf.float32)) for value in self.losses]
        return loss + tf.add_n(extra) if extra else loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates accuracy, top-5 and the compiled metrics; returns every metric's result.

        ``y_pred``: the anchor logits, or ``{"logits", "features"}`` when the caller has the
        features already (otherwise they are computed from ``x`` if a metric needs them).
        """
        outputs = y_pred if isinstance(y_pred, dict) else {"logits": y_pred}
        # A user's model under mixed precision may emit float16 logits; metrics take float32.
        logits = tf.cast(outputs["logits"], tf.float32)
        self.accuracy_metric.update_state(y, logits, sample_weight)
        self.top5_metric.update_state(y, logits, sample_weight)
        if self._compile_metrics is not None:
            self._compile_metrics.update_state(y, logits, sample_weight)
        if self._feature_metrics:
            features = outputs.get("features")
            if features is None:
                features = self.embed(x, training=False)
            features = tf.cast(features, tf.float32)
            for metric, weighted in self._feature_metrics:
                metric.update_state(y, features, sample_weight if weighted else None)
        results = self.get_metrics_result()
        if _reduces_across_workers(tf.distribute.get_strategy()):
            # Keras 3.15 averages step outputs across workers with reduce(axis=0), which
            # fails on scalars (tensorflow/tensorflow#72388); one-element vectors reduce to
            # the same scalar. The values are already global: metric variables sum their
            # updates over all replicas.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def _track_loss(self, loss, terms, batch_size):
        # Weighted by the batch size, as Keras' own loss tracker: a short last batch counts
        # for its examples, so an epoch's value is the mean over examples.
        self.loss_tracker.update_state(loss, sample_weight=batch_size)
        for tracker in self.term_trackers:
            if tracker.name in terms:
                tracker.update_state(terms[tracker.name], sample_weight=batch_size)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras 3.15 first reduces a whole input batch across replicas
        # to build the model symbolically; MultiWorkerMirroredStrategy rejects the nested
        # ((anchor, partner), label) batch. A built model with a built optimizer (what
        # trainer.build_model and compile_model make) has nothing left to build.
        built = self.built and all(layer.built for layer in all_sublayers(self))
        compiled_built = self._compile_metrics is None or self._compile_metrics.built
        if built and compiled_built and (self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # -------------------------------------------------------------------- steps
    def _unpack(self, data):
        x, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        images = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        return images, labels, sample_weight

    @staticmethod
    def _normalized_weights(sample_weight):
        """ŵ = w / mean(w) over the global batch (see the module docstring); None stays None."""
        if sample_weight is None:
            return None
        weights = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        mean = tf.reduce_mean(weights)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            mean = replica.all_reduce(tf.distribute.ReduceOp.MEAN, mean)
        return tf.math.divide_no_nan(weights, mean)

    def train_step(self, data):
        images, labels, sample_weight = self._unpack(data)
        # Only training needs the method's support: evaluation's loss is a weighted CE.
        if sample_weight is not None and not self.method.supports_sample_weight:
            raise ModelError(f"method {self.method.name!r} does not take sample weights; drop "
                             "sample_weight/class_weight or use 'cskd' or 'ce'")
        targets = self.method.detached_outputs(self, images, labels)
        weights = self._normalized_weights(sample_weight)
        if weights is not None:
            targets = {**targets, "sample_weight": weights}
        with tf.GradientTape() as tape:
            loss, logits, terms = self.method.loss(self, images, labels, targets)
            loss = self.compute_loss(x=images, y=labels,
                                     y_pred={**terms, "loss": loss, "logits": logits},
                                     sample_weight=sample_weight, training=True)
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
                # gradient of the global-batch mean. Weight decay and model.losses, the
                # same on every replica, are then counted once.
                objective = objective / replicas
            scaled = self.optimizer.scale_loss(objective)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self._track_loss(loss, terms, tf.shape(labels)[0])
        return self.compute_metrics(images[0], labels, logits, sample_weight)

    def test_step(self, data):
        images, labels, sample_weight = self._unpack(data)
        outputs = self.forward(images[0], training=False)
        ce = cross_entropy(labels, outputs["logits"],
                           sample_weight=self._normalized_weights(sample_weight))
        loss = self.compute_loss(x=images, y=labels,
                                 y_pred={"loss": ce, "ce": ce, "logits": outputs["logits"]},
                                 sample_weight=sample_weight, training=False)
        self._track_loss(loss, {"ce": ce}, tf.shape(labels)[0])
        return self.compute_metrics(images[0], labels, outputs, sample_weight)

    # ------------------------------------------------------------------ serving
    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """``export(path[, top_k, class_names, pixel_max])``: cskd-export's three signatures
        (cskd_tf/signatures.py) from what the model carries; another ``format`` or an
        ``input_signature`` takes Keras' own export."""
        if format != "tf_saved_model" or input_signature is not None:
            return super().export(filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)
        from cskd_tf.signatures import export_model

        return export_model(self, filepath, verbose=verbose, **kwargs)

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "method": dict(self.method.get_config()),
            "mean": self.normalize.mean,
            "std": self.normalize.std,
            "lambda_cls": float(keras.ops.convert_to_numpy(self.lambda_cls)),
            "weight_decay": self.weight_decay,
            "feature_layer": self.feature_layer,
            "class_names": None if self.class_names is None else list(self.class_names),
            "pixel_max": self.pixel_max,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"),
                                                         custom_objects=custom_objects)
        method = method_from_config(config.pop("method"))
        return cls(backbone, method=method, **config)


def _split_feature_metrics(metrics):
    """(metrics taking features, the rest or None) of a compile metrics argument."""
    if metrics is None:
        return [], None
    if not isinstance(metrics, (list, tuple)):
        raise ModelError(f"CSKDModel.compile takes metrics as a list (one output), got "
                         f"{type(metrics).__name__}")
    features = [m for m in metrics if getattr(m, "takes_features", False)]
    rest = [m for m in metrics if not getattr(m, "takes_features", False)]
    return features, (rest or None)

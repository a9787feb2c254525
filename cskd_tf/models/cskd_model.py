"""CSKDModel: any Keras classifier trained with a method's loss through ``model.fit``.

(Just over 400 lines: one Keras class, whose step, metrics, serialization and export hooks
belong together; compile arguments and fit-time data checks already live in
``compile_args.py`` and ``fit_checks.py``.)

The wrapped model is either a backbone of :mod:`cskd_tf.models` (outputs
``{"logits", "features"}``) or any functional/Sequential Keras model whose
output is the logits (see :mod:`cskd_tf.models.classifier_view` for where the
penultimate features come from). Like ``keras.distillation.Distiller`` the
objective goes through :meth:`CSKDModel.compute_loss`; ``model.fit`` runs:

    draws = method.draws(...)                # random draws, e.g. mixup's λ
    with GradientTape:
        outputs = method.forward(...)        # the passes with gradient (the anchor's)
        with tape.stop_recording():          # e.g. the CS-KD partner pass, no gradient,
            detached = method.detached_outputs(...)  # after the anchor as in the reference
        loss = compute_loss(...)             # method.loss(supervised=compiled loss)
                                             # + Σ model.losses, scaled as Keras scales
        objective = loss + wd/2 · Σ‖θ‖²      # coupled weight decay, as torch SGD
    optimizer.apply(∇objective)
    compute_metrics(...)                     # compile(metrics=[...]) on the anchor logits

Weight decay enters the objective (not the optimizer) because the paper's
recipe is PyTorch's SGD, whose weight decay is added to the gradient before
momentum; Keras' ``weight_decay`` argument is the decoupled variant. The
logged ``loss`` excludes it, as the reference code's logs do, but includes
``model.losses``, as Keras' own logs do.

The compile contract, as Keras': ``compile(loss=...)`` is the supervised term
(default ``SparseCategoricalCrossentropy(from_logits=True)``; ``loss_weights``
scales it) of the methods built on the cross-entropy (``ce``, ``cskd``,
``cskd_e``, ``max_entropy``, ``kd``, ``kd_cskd``); the methods that replace
the cross-entropy refuse another loss with a one-line reason. ``metrics`` are
updated with (labels, anchor logits), ``weighted_metrics`` also with the sample
weights. The logs hold ``loss``, the method's terms (``ce``, ``cls``, ...) and
the compiled metrics, nothing else. A metric with ``takes_features = True``
(:class:`cskd_tf.evaluation.RecallAtK`) gets the penultimate features instead of
the logits, and is computed in evaluation only (fit's validation pass,
``evaluate``): ranking a moving network's training features means little and
costs an all-pairs similarity per step; :func:`evaluation_only` marks any other
metric so (cskd-train's ECE and NLL). The loss terms and those metrics sit
in metric groups Keras' callbacks inspect, so ``EarlyStopping(monitor=...)``
infers their direction (loss terms down) without ``mode=``.

Sample weights (``fit(sample_weight=...)``, ``class_weight``) weight each anchor
in the supervised and the class-wise term: the step uses ŵ_i = w_i / mean(w)
over the global batch, so every batch mean becomes Σ w_i·ℓ_i / Σ w_i (the
convention of PyTorch's weighted cross-entropy), and a weight of 0 removes an
example from the loss exactly as if it were not in the batch (its partner pass
and batch-norm statistics aside). Only methods with ``supports_sample_weight``
accept them in training; evaluation's loss is the weighted supervised term.

Under a ``tf.distribute`` strategy with R replicas the step runs once per
replica on its slice of the global batch; ``compute_loss`` scales the
per-replica objective by 1/R with Keras' own loss scaling (the optimizer sums
the replicas' gradients), so training follows the gradient of the
global-batch mean, and Keras' loss tracker unscales it for the logs; the
logged metrics are global-batch values too (see
cskd_tf/training/distribute.py).

``call(x)`` returns logits, so ``predict``, export and any Keras tool treat it
as an ordinary classifier; ``embed(x)`` returns the penultimate features.
``model.save("m.keras")`` / ``keras.models.load_model`` round-trip the wrapped
model, the method (a registered Keras object with its hyperparameters and its
λ variable), the compile arguments and the optimizer state.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cskd_tf import compat
from cskd_tf.errors import CSKDError, ModelError
from cskd_tf.losses import METHODS, get
from cskd_tf.losses.methods.base import weighted_mean
from cskd_tf.models.classifier_view import classifier_view, returns_contract
from cskd_tf.models.compile_args import (is_default_loss, logits_loss, single_weight,
                                         split_metrics, default_loss)
from cskd_tf.models.fit_checks import check_fit_data

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


# Terms whose direction EarlyStopping may infer (losses: lower is better); the others
# (entropy, AdaCos' scale, mixup's λ) have none.
_LOSS_TERMS = {"ce", "cls", "sample", "kd", "kl", "mmd", "aux_ce", "aux_kd", "hint"}


@keras.saving.register_keras_serializable(package="cskd_tf")
class CSKDModel(compat.PrebuiltSymbolicBuild, keras.Model):
    """A classifier trained with a method's loss through ``model.fit``.

    Args:
      backbone: a functional or Sequential Keras model whose output is the logits
        (batch, classes), or one returning ``{"logits", "features"}`` (the backbones of
        :mod:`cskd_tf.models`).
      method: a registered name (``"cskd"``, the default, with the paper's T = 4, λ = 1) or
        a method object such as ``cskd_tf.losses.CSKD(temperature=4.0, weight=3.0)``. The
        method holds its hyperparameters, λ included.
      mean, std: per-channel input statistics, in the units of the input images; None (the
        default) = no normalisation (e.g. keras.applications models normalise themselves).
      weight_decay: coupled L2 coefficient (the paper's 1e-4).
      feature_layer: name of the layer whose output is the feature vector; default: the
        input of the last Dense layer. Ignored for backbones returning the dict.
      class_names: the label of each class (what ``export`` serves); default "0", "1", ...
      pixel_max: the input value of a full pixel: 1.0 ([0, 1], cskd-train) or 255.0 (Keras'
        image loaders; ``pairs.pixel_max``); ``export`` scales served uint8 to it.
    """

    def __init__(self, backbone, method="cskd", mean=None, std=None, weight_decay=0.0,
                 feature_layer=None, class_names=None, pixel_max=None, **kwargs):
        if "lambda_cls" in kwargs:
            raise ModelError("CSKDModel(lambda_cls=...) is gone: λ belongs to the method; pass "
                             "method=cskd_tf.losses.CSKD(weight=λ) instead")
        super().__init__(**kwargs)
        method = get("cskd" if method is None else method)
        self.backbone = backbone
        self.feature_layer = feature_layer or None
        self._plain = not returns_contract(backbone)
        view = classifier_view(backbone, self.feature_layer) if self._plain else backbone
        # The view shares the backbone's layers; set past Keras' attribute tracking so that
        # every weight is tracked (and saved) once, under `backbone`, not twice.
        object.__setattr__(self, "_net", view)
        self.method = method
        self.normalize = Normalize(mean, std, name="normalize")
        self.weight_decay = float(weight_decay)
        # Serving facts (see export); tuples, so Keras does not track them as layers' lists.
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        self.pixel_max = None if pixel_max is None else float(pixel_max)
        self._build_method()
        # The method's state (its λ variable), tracked by the model so checkpoints and
        # .keras files hold it, under the variable's name: `lambda_cls`, the name runs
        # written before methods owned λ used, so their checkpoints restore into it.
        for variable in method.variables:
            setattr(self, variable.name, variable)
        trackers = []
        for term in method.terms:
            tracker = keras.metrics.Mean(name=term)
            if term in _LOSS_TERMS:
                compat.declare_direction(tracker, "down")
            trackers.append(tracker)
        self.loss_terms = compat.metric_group(trackers, name="loss_terms")
        self.own_metrics = compat.metric_group([], name="own_metrics")
        self._weighted_own = []
        self.supervised_loss = default_loss()
        self.supervised_weight = 1.0
        self._compile_args = {}
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

    @property
    def num_classes(self):
        return self._net.output["logits"].shape[-1]

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

    def example_batch(self):
        """A zero (images, labels) batch of the model's input signature (for Keras' build)."""
        shape = [1 if d is None else d for d in self._net.input.shape]
        return tf.zeros(shape, tf.float32), tf.zeros([shape[0]], tf.int32)

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, **kwargs):
        """Keras' compile: ``loss`` (× ``loss_weights``) is the supervised term."""
        reason = self.method.replaces_cross_entropy
        if reason and not is_default_loss(loss):
            raise ModelError(f"method {self.method.name!r} computes its own supervised loss "
                             f"({reason}), so compile(loss={loss!r}) would be ignored; drop "
                             "loss= or use a method built on the compiled loss, such as 'cskd'")
        if reason and loss_weights is not None:
            raise ModelError(f"method {self.method.name!r} computes its own supervised loss "
                             f"({reason}); drop compile(loss_weights=...)")
        self.supervised_loss = logits_loss(loss)
        self.supervised_weight = single_weight(loss_weights)
        own, plain = split_metrics(metrics)
        weighted_own, weighted_plain = split_metrics(weighted_metrics)
        # loss=None to Keras: the method combines the supervised term with its own terms in
        # compute_loss, as keras.distillation.Distiller does with its student loss.
        super().compile(optimizer=optimizer, metrics=plain, weighted_metrics=weighted_plain,
                        **kwargs)
        # Serialized now: a dict holding the metric objects would make Keras track them twice.
        self._compile_args = keras.saving.serialize_keras_object(
            {"loss": loss, "loss_weights": loss_weights, "metrics": metrics,
             "weighted_metrics": weighted_metrics})
        self.own_metrics = compat.metric_group(own + weighted_own, name="own_metrics")
        self._weighted_own = [False] * len(own) + [True] * len(weighted_own)
        dim = self._net.output["features"].shape[-1]
        for metric in self.own_metrics.metrics:
            # Create a feature metric's state now, eagerly (Keras builds compiled metrics the
            # same way before the first step): an empty batch of `dim`-wide features.
            if getattr(metric, "takes_features", False) and dim is not None:
                metric.update_state(tf.zeros([0], tf.int32), tf.zeros([0, dim], tf.float32))
                metric.reset_state()

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:  # the caller's arguments, as compile() got them
            config.update(self._compile_args)
        return config

    def compile_from_config(self, config):
        # Keras skips a custom compile() when loading; this one takes Keras' own arguments.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)  # so saved slots load into it

    # ---------------------------------------------------------------- the loss
    def supervised(self, labels, logits, sample_weight=None):
        """The compiled loss: ``loss_weights`` · mean_i(w_i · loss(y_i, logits_i))."""
        values = self.supervised_loss(labels, tf.cast(logits, tf.float32))
        return self.supervised_weight * weighted_mean(values, sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' loss hook: the method's objective (or, from evaluation, the supervised term)
        plus ``model.losses``, scaled for distribution as Keras scales a compiled loss.

        ``y_pred``: the train step's outputs (the method's forward outputs and, under
        ``"detached"``, its detached ones), or the logits (evaluation).
        """
        weights = _normalized_weights(sample_weight)
        if isinstance(y_pred, dict) and "detached" in y_pred:
            detached = y_pred["detached"]
            if weights is not None:
                detached = {**detached, "sample_weight": weights}
            loss, terms = self.method.loss(self, y, y_pred, detached, self.supervised)
        else:
            logits = y_pred["logits"] if isinstance(y_pred, dict) else y_pred
            loss = self.supervised(y, logits, weights)
            terms = {"ce": loss}
        batch = tf.shape(y)[0]
        for tracker in self.loss_terms.metrics:
            if tracker.name in terms:
                # Weighted by the batch size, as Keras' own loss tracker: a short last batch
                # counts for its examples, so an epoch's value is the mean over examples.
                tracker.update_state(terms[tracker.name], sample_weight=batch)
        loss = tf.cast(loss, tf.float32)
        extra = [tf.reduce_sum(tf.cast(value, tf.float32)) for value in self.losses]
        if extra:
            loss = loss + tf.add_n(extra)
        return compat.scale_loss_for_distribution(loss)

    # -------------------------------------------------------------------- steps
    def train_step(self, data):
        x, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        images = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        # Only training needs the method's support: evaluation's loss is a weighted CE.
        if sample_weight is not None and not self.method.supports_sample_weight:
            raise ModelError(f"method {self.method.name!r} does not take sample weights; drop "
                             "sample_weight/class_weight or use 'cskd' or 'ce'")
        # Keras' own train_step would record every pass on the tape. The partner (and
        # teacher, second-view) passes carry no gradient: Method.passes runs them after the
        # anchor pass with the tape stopped, which is all this override is for.
        with tf.GradientTape() as tape:
            outputs, detached = self.method.passes(self, images, labels, tape)
            y_pred = {**outputs, "detached": detached}
            loss = self.compute_loss(x=images, y=labels, y_pred=y_pred,
                                     sample_weight=sample_weight, training=True)
            compat.loss_tracker(self).update_state(
                compat.unscale_loss_for_distribution(loss), sample_weight=tf.shape(labels)[0])
            objective = loss
            if self.weight_decay:
                decay = 0.5 * self.weight_decay * tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                     for v in self.trainable_variables])
                objective += compat.scale_loss_for_distribution(decay)
            objective = self.optimizer.scale_loss(objective)
        gradients = tape.gradient(objective, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self.compute_metrics(images[0], labels, y_pred, sample_weight, training=True)

    def compute_metrics(self, x, y, y_pred, sample_weight=None, training=False):
        """Updates the compiled metrics with the anchor logits (and, in evaluation, the
        feature metrics with the features); returns every logged value."""
        outputs = y_pred if isinstance(y_pred, dict) else {"logits": y_pred}
        # A user's model under mixed precision may emit float16 logits; metrics take float32.
        logits = tf.cast(outputs["logits"], tf.float32)
        if self.own_metrics.metrics and not training:
            features = None
            for metric, weighted in zip(self.own_metrics.metrics, self._weighted_own):
                values = logits
                if getattr(metric, "takes_features", False):
                    if features is None:
                        features = outputs.get("features")
                        features = tf.cast(self.embed(x, training=False) if features is None
                                           else features, tf.float32)
                    values = features
                metric.update_state(y, values, sample_weight if weighted else None)
        results = super().compute_metrics(x, y, logits, sample_weight)
        # Each phase logs what it computes: training not the evaluation-only metrics,
        # evaluation not the method's terms (its loss is the supervised term, logged as ce).
        skipped = (self.own_metrics.metrics if training
                   else [m for m in self.loss_terms.metrics if m.name != "ce"])
        for metric in skipped:
            results.pop(metric.name, None)
        if compat.reduces_step_outputs_across_workers(tf.distribute.get_strategy()):
            # Keras 3.15 averages step outputs across workers with reduce(axis=0), which
            # fails on scalars (tensorflow/tensorflow#72388); one-element vectors reduce to
            # the same scalar. The values are already global: metric variables sum their
            # updates over all replicas.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras' fit, after checking the data against the model and the method (one-line
        DataError/ModelError before the first step; see :mod:`cskd_tf.models.fit_checks`)."""
        check_fit_data(self, x if y is None else None)
        return super().fit(x, y, *args, **kwargs)

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
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "method": keras.saving.serialize_keras_object(self.method),
            "mean": self.normalize.mean,
            "std": self.normalize.std,
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
        method = config.pop("method")
        legacy_lambda = config.pop("lambda_cls", None)
        if isinstance(method, dict) and "name" in method and "class_name" not in method:
            method = _legacy_method(method, legacy_lambda)
        else:
            method = keras.saving.deserialize_keras_object(method, custom_objects=custom_objects)
        return cls(backbone, method=method, **config)


def _legacy_method(config, lambda_cls):
    """A method saved by cskd_tf before methods were Keras objects: ``{"name", **kwargs}``
    and the model's ``lambda_cls``."""
    config = dict(config)
    name = config.pop("name")
    if name not in METHODS:
        raise ModelError(f"unknown method {name!r} in a saved CSKDModel; import the module "
                         f"that registers it before keras.models.load_model")
    if "mixup" in config:  # nested groups became flat keywords
        config.update(config.pop("mixup"))
    if "kd" in config:
        kd = config.pop("kd")
        config.update(kd_temperature=kd.pop("temperature"), **kd)
    if lambda_cls is not None and "weight" in METHODS[name]().get_config():
        config["weight"] = lambda_cls
    return METHODS[name].from_config(config)


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

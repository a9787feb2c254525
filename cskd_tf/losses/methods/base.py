"""The interface every training method implements.

A method is one row of the paper's comparison tables. It declares what the
input pipeline must emit (``views``), what the model's head looks like
(``head``), which scalar terms it logs (``terms``), and computes its loss in
two parts so that the train step can keep passes that need no gradient out
of the gradient tape:

    detached = method.detached_outputs(model, images, labels)          # no tape
    loss, logits, terms = method.loss(model, images, labels, detached)  # tape

``images`` is always a tuple ordered as ``views``. ``model`` is a
:class:`cskd_tf.models.CSKDModel`; ``model.forward(x, training)`` returns
``{"logits", "features"}``. ``logits`` returned by ``loss`` are the anchor
logits the step's accuracy metrics use.

Hyperparameters: a method's constructor takes them by name, never the
whole experiment config. :meth:`Method.from_config` picks them from the
config: the method's own group (``config.kd``, ``config.mixup``, ...,
named after the method, as big_vision passes ``config.model`` to
``Model(**config.model)``) plus the few shared top-level fields it reads
(CS-KD's ``config.temperature``, the seed). :meth:`Method.get_config`
returns the same keywords (and ``name``), so ``METHODS[name](**rest)``
rebuilds the method. A combined method takes each part's group as a
mapping named after the group (``kd_cskd``: ``temperature`` and ``kd``).

Sample weights: when the batch carries them (``fit(sample_weight=...)``,
``class_weight``), ``detached["sample_weight"]`` holds them per anchor,
normalised by CSKDModel to average 1, and a method with
``supports_sample_weight = True`` takes every batch mean as
``mean_i(w_i · term_i)`` (the ``sample_weight`` argument of
:func:`cross_entropy` and :func:`cskd_tf.losses.class_wise_kl`). CSKDModel
refuses sample weights for the other methods.

Adding a method: one module in this package defining a subclass and
decorating it with ``@register("name")``, plus its group in
:func:`cskd_tf.config.default_config` if it has hyperparameters.
"""

from __future__ import annotations

import tensorflow as tf

from cskd_tf.errors import ModelError

METHODS: dict[str, type["Method"]] = {}


def register(name):
    def wrap(cls):
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


def get_method(name, config):
    """Instantiates the method ``name`` from an experiment config; ModelError if unknown."""
    if name not in METHODS:
        raise ModelError(f"unknown method {name!r}; set --config.method to one of: "
                         f"{', '.join(sorted(METHODS))}")
    return METHODS[name].from_config(config)


def weighted_mean(per_example, sample_weight=None):
    """mean_i(w_i · x_i); the plain batch mean without weights."""
    per_example = tf.cast(per_example, tf.float32)
    if sample_weight is None:
        return tf.reduce_mean(per_example)
    return tf.reduce_mean(per_example * tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))


def cross_entropy(labels, logits, label_smoothing=0.0, sample_weight=None):
    """Mean softmax cross-entropy from integer labels, computed in float32.

    ``sample_weight`` (batch,) weights each example: mean_i(w_i · CE_i).
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    if label_smoothing:
        num_classes = tf.shape(logits)[-1]
        one_hot = tf.one_hot(labels, num_classes)
        targets = one_hot * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, tf.float32)
        per_example = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
    else:
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    return weighted_mean(per_example, sample_weight)


class Method:
    """Plain cross-entropy behaviour; subclasses override what differs."""

    name = "base"
    views: tuple[str, ...] = ("anchor",)
    head = "linear"
    terms: tuple[str, ...] = ("ce",)
    # True: the trainer loads a frozen teacher (its ``teacher_workdir`` and ``teacher_model``
    # attributes, from config.kd) and passes it to
    # prepare_training; the method itself never reads workdirs or files.
    needs_teacher = False
    # Whether loss() honours detached["sample_weight"] (see the module docstring).
    supports_sample_weight = False

    @classmethod
    def from_config(cls, config):
        """The method with its hyperparameters taken from the experiment ``config``
        (a :func:`cskd_tf.config.default_config`-shaped ConfigDict). Not Keras's
        ``from_config``: the inverse of :meth:`get_config` is ``cls(**hyperparameters)``."""
        return cls()

    def hyperparameters(self):
        """The constructor's keywords, as plain values."""
        return {}

    def get_config(self):
        return {"name": self.name, **self.hyperparameters()}

    def build(self, model):
        """Creates extra state on ``model`` (heads, variables). Called once."""

    def prepare_training(self, model, teacher=None):
        """Takes state only training needs; ``trainer.train`` calls it once after building
        the model, with ``teacher`` a frozen ``images -> logits`` callable when the method
        sets ``needs_teacher`` (else None). Unlike :meth:`build`, evaluation and export of a
        finished run never call it, so they do not need the teacher."""

    def detached_outputs(self, model, images, labels):
        """Outputs computed outside the gradient tape (partner, second-view and teacher
        passes, mixing draws), keyed by name; :meth:`loss` receives them."""
        return {}

    def loss(self, model, images, labels, detached):
        raise NotImplementedError

"""The interface every training method implements.

A method is one row of the paper's comparison tables, and a Keras-style object
that owns its hyperparameters: ``cskd_tf.losses.CSKD(temperature=4.0,
weight=1.0)``, with the paper's values as constructor defaults. It declares
what the input pipeline must emit (``views``), what the model's head looks like
(``head``) and which scalar terms it logs (``terms``), and computes its loss in
four parts, which :meth:`Method.passes` and the train step run in this order:

    draws = method.draws(model, images, labels)                        # no passes
    with GradientTape() as tape:
        outputs = method.forward(model, images, draws)                 # recorded
        with tape.stop_recording():
            detached = {**draws, **method.detached_outputs(model, images, labels,
                                                            draws)}     # not recorded
        total, terms = method.loss(model, labels, outputs, detached,
                                   supervised)                          # recorded

``draws`` are the random quantities the passes with gradient need (mixup's λ,
permutation and mixed batch); ``forward`` runs the passes with gradient (the anchor
pass); ``detached_outputs`` runs the passes that only produce targets (the CS-KD
partner pass, a second view, a teacher) and its values are constants of the loss
(``tf.stop_gradient``, and kept off the tape so their activations are not stored).
Why the anchor pass comes before the partner pass: both run in training mode, so
each moves the batch-norm running statistics, r ← 0.9·r + 0.1·batch statistic,
and the order decides the result (after a step 0.81·r₀ + 0.09·first + 0.1·second).
The reference code (alinlab/cs-kd ``train.py``) computes the anchor outputs
first and the partner's under ``torch.no_grad()`` after them; this order
reproduces its running statistics (tests/test_golden_step.py).

``images`` is always a tuple ordered as ``views``. ``model`` is a
:class:`cskd_tf.models.CSKDModel`; ``model.forward(x, training)`` returns
``{"logits", "features"}``; ``outputs["logits"]`` are the anchor logits the
compiled metrics see. ``supervised(labels, logits, sample_weight=None)`` is the
compiled loss (``compile(loss=...)``, default sparse categorical cross-entropy
from logits, times ``loss_weights``): methods whose supervised term is the
cross-entropy take it from there; a method that replaces the cross-entropy
(label smoothing, AdaCos, mixup, ...) sets ``replaces_cross_entropy`` to a short
reason, and CSKDModel.compile refuses a non-default loss for it.

Hyperparameters: ``get_config()`` returns the constructor's keywords and
``from_config(config)`` is ``cls(**config)`` (Keras' inverse pair; every method
class is registered with ``keras.saving.register_keras_serializable``).
:meth:`Method.from_experiment_config` builds the method from an application
experiment config (the method's own group, e.g. ``config.kd``, plus the shared
top-level fields it reads: ``config.temperature``, ``config.lambda_cls``, the
seed); :func:`get_method` is that path by registered name, :func:`get` the
Keras-style one (a name with the paper's defaults, an object, or a serialized
dict).

λ, the weight of the class-wise term, is a non-trainable variable the method
owns (``method.lambda_cls``, created in :meth:`build`), so a callback can warm it
up without retracing the step; its initial value is the ``weight`` argument.

Sample weights: when the batch carries them (``fit(sample_weight=...)``,
``class_weight``), ``detached["sample_weight"]`` holds them per anchor,
normalised by CSKDModel to average 1, and a method with
``supports_sample_weight = True`` takes every batch mean as
``mean_i(w_i · term_i)`` (the ``sample_weight`` argument of ``supervised`` and
of :func:`cskd_tf.losses.class_wise_kl`). CSKDModel refuses sample weights for
the other methods.

Adding a method: one module in this package defining a subclass decorated with
``@register("name", display_name="Title", defaults=("keyword", ...))``; nothing else.
``cskd_tf.losses`` imports every module of the package, ``defaults`` names the
constructor keywords that form the method's config group ``config.<name>`` (their
signature defaults, the paper's values, are the group's defaults in
:func:`cskd_tf.config.default_config`), and ``display_name`` is the method's row title in
reports. Keep the decorator's arguments literals: the config schema, the CLI's flag check
and ``cskd-report`` read them from the source without importing the method modules.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from cskd_tf.config import check_range
from cskd_tf.errors import ModelError
from cskd_tf.registry import METHODS

def register(name, *, display_name=None, defaults=None):
    """Registers a method class in :data:`cskd_tf.registry.METHODS` under ``name`` (the
    CLI's --config.method) and with Keras' serialization (``package="cskd_tf"``, the class
    name).

    ``display_name``: the report's row title (default ``name``). ``defaults``: the
    constructor keywords that form the method's config group ``config.<name>`` (a tuple of
    names; their signature defaults become the group's defaults), or None for a method
    without a group of its own (it reads shared fields or another method's group).
    """
    def wrap(cls):
        METHODS.add(name, cls, display_name=display_name, defaults=defaults)
        cls.name = name
        return keras.saving.register_keras_serializable(package="cskd_tf")(cls)
    return wrap


def get_method(name, config):
    """Instantiates the method ``name`` from an experiment config; ModelError if unknown."""
    return METHODS.get(name).obj.from_experiment_config(config)


def get(identifier) -> "Method":
    """A method from a registered name (the paper's defaults), a Method, or a dict from
    ``keras.saving.serialize_keras_object``; ModelError for anything else."""
    if isinstance(identifier, Method):
        return identifier
    if isinstance(identifier, str):
        return METHODS.get(identifier).obj()
    if isinstance(identifier, dict) and "class_name" in identifier:
        return keras.saving.deserialize_keras_object(identifier)
    raise ModelError(f"method={identifier!r} is not a method; pass a name such as 'cskd' or "
                     "an object such as cskd_tf.losses.CSKD(temperature=4.0, weight=1.0)")


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
        uniform = label_smoothing / tf.cast(num_classes, tf.float32)
        targets = one_hot * (1.0 - label_smoothing) + uniform
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
    # None: the supervised term is the compiled loss. A string: why the method computes its
    # own (CSKDModel.compile refuses a non-default compile(loss=...) with it).
    replaces_cross_entropy: str | None = None

    @classmethod
    def from_experiment_config(cls, config):
        """The method with its hyperparameters taken from the experiment ``config``
        (a :func:`cskd_tf.config.default_config`-shaped ConfigDict)."""
        return cls()

    def get_config(self):
        """The constructor's keywords, as plain values (Keras' convention)."""
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    @property
    def variables(self):
        """The state the method owns (λ for class-wise methods); CSKDModel tracks it."""
        return []

    def build(self, model):
        """Creates extra state on ``model`` (heads, variables). Called once per model."""

    def prepare_training(self, model, teacher=None):
        """Takes state only training needs; ``trainer.train`` calls it once after building
        the model, with ``teacher`` a frozen ``images -> logits`` callable when the method
        sets ``needs_teacher`` (else None). Unlike :meth:`build`, evaluation and export of a
        finished run never call it, so they do not need the teacher."""

    def draws(self, model, images, labels):
        """The random draws :meth:`forward` needs (mixing coefficients, permutations),
        keyed by name; no network passes. :meth:`detached_outputs` and :meth:`loss` see
        them too."""
        return {}

    def forward(self, model, images, draws):
        """The passes with gradient: a dict holding at least the anchor ``logits``."""
        return model.forward(images[0], training=True)

    def detached_outputs(self, model, images, labels, draws):
        """Targets computed without gradient after :meth:`forward` (partner, second-view and
        teacher passes), keyed by name; :meth:`loss` receives them with the draws."""
        return {}

    def loss(self, model, labels, outputs, detached, supervised):
        """(total, {term: value}) from :meth:`forward`'s outputs."""
        ce = supervised(labels, outputs["logits"], detached.get("sample_weight"))
        return ce, {"ce": ce}

    def passes(self, model, images, labels, tape=None):
        """(outputs, detached): :meth:`draws`, :meth:`forward`, then :meth:`detached_outputs`
        (the module docstring's order). ``tape``, the gradient tape the caller records the
        forward on, stops recording around the detached passes; without it they are still
        constants of the loss (``tf.stop_gradient``)."""
        draws = self.draws(model, images, labels)
        outputs = self.forward(model, images, draws)
        with tape.stop_recording() if tape is not None else contextlib.nullcontext():
            targets = self.detached_outputs(model, images, labels, draws)
        return outputs, {**draws, **tf.nest.map_structure(tf.stop_gradient, targets)}

    def objective(self, model, images, labels, supervised=None, tape=None):
        """:meth:`passes` then :meth:`loss`: (total, anchor logits, terms), for custom loops.
        ``supervised`` defaults to the model's compiled loss (``model.supervised``) or, on a
        model without one, the mean softmax cross-entropy."""
        if supervised is None:
            supervised = getattr(model, "supervised", None) or _cross_entropy_term
        outputs, detached = self.passes(model, images, labels, tape)
        total, terms = self.loss(model, labels, outputs, detached, supervised)
        return total, outputs["logits"], terms


def _cross_entropy_term(labels, logits, sample_weight=None):
    return cross_entropy(labels, logits, sample_weight=sample_weight)


class ClassWiseTerm(Method):
    """The class-wise term's hyperparameters and λ variable, shared by every CS-KD method.

    ``temperature``: T of the softened predictions; ``weight``: λ, the initial value of the
    non-trainable ``lambda_cls`` variable :meth:`build` creates (warm-up callbacks assign
    it; ``get_config`` keeps the constructor's value).
    """

    def __init__(self, temperature=4.0, weight=1.0):
        self.temperature = check_range("temperature", temperature, low=0, low_open=True)
        self.weight = check_range("lambda_cls", weight, low=0)
        self.lambda_cls = None

    @property
    def variables(self):
        return [] if self.lambda_cls is None else [self.lambda_cls]

    def build(self, model):
        # A variable (not a float) so a schedule changes λ without retracing the step.
        self.lambda_cls = keras.Variable(self.weight, trainable=False, dtype="float32",
                                         name="lambda_cls")

    def class_wise_weight(self):
        if self.lambda_cls is None:
            raise ModelError(f"method {self.name!r} is not built; pass it to "
                             "CSKDModel(net, method=...) before training")
        return self.lambda_cls

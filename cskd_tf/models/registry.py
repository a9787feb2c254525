"""Backbones by name: the :data:`cskd_tf.registry.MODELS` registry and :func:`build`.

A backbone module in this package registers a *body* function (importing
:mod:`cskd_tf.models` imports every module of the package, so the module is all
there is to add)::

    @register("my_net", style="cifar", standard_width=64, display_name="My-Net")
    def my_net(inputs, width):
        ...                      # creates layers named stage1..stageN
        return pooled            # (B, D) globally pooled features

and :func:`build` turns it into a full model with the shared head of
:mod:`cskd_tf.models.heads`. A body receives the model's ``keras.Input`` and
the resolved width (its ``standard_width`` when the caller passed 0; 0 for
architectures without a width knob) plus any architecture-specific keyword
arguments declared in its signature.

``style`` decides the default input shape: ``"cifar"`` -> (32, 32, 3),
``"imagenet"`` -> (224, 224, 3). ``min_size`` is the smallest spatial size
the architecture accepts (8 for most; 32 for the ImageNet DenseNets, whose
flooring transition pools would shrink a smaller map to zero).
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from typing import Callable

import keras

from cskd_tf.errors import ModelError
from cskd_tf.models import heads
from cskd_tf.models.init import apply_init, check_init
from cskd_tf.registry import MODELS

_DEFAULT_INPUT_SHAPES = {"cifar": (32, 32, 3), "imagenet": (224, 224, 3)}
# Keyword arguments build() consumes itself; the rest go to the body.
_BUILD_KWARGS = ("scale", "name")


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture."""

    name: str
    body: Callable
    style: str
    min_size: int
    standard_width: int | None  # None: the architecture has no width knob
    torch_conv_init: str = "pytorch_default"  # how the reference code draws conv kernels

    @property
    def default_input_shape(self):
        return _DEFAULT_INPUT_SHAPES[self.style]

    @property
    def summary(self):
        doc = inspect.getdoc(self.body) or ""
        return doc.splitlines()[0] if doc else self.name


def register(name, *, style="cifar", min_size=8, standard_width=None,
             torch_conv_init="pytorch_default", display_name=None):
    """Decorator registering a backbone body under ``name`` in :data:`MODELS`.

    The entry's ``meta`` is the :class:`ModelSpec`; its ``defaults`` are the body's
    keyword arguments after ``(inputs, width)`` with their default values. Keep the
    arguments literals: :meth:`cskd_tf.registry.Registry.declared` reads them unimported.

    Args:
        name: registry name (lower case, used in configs).
        style: ``"cifar"`` or ``"imagenet"``; sets :func:`default_input_shape`.
        min_size: smallest input height/width the body supports.
        standard_width: the architecture's own width (what ``width=0``
            means), or None if ``width`` is not supported.
        torch_conv_init: how the CS-KD reference code initialises this
            architecture's convolutions, used by ``build(..., init="torch")``
            (see :mod:`cskd_tf.models.init`).
        display_name: how reports name the architecture (default: ``name``).
    """
    if style not in _DEFAULT_INPUT_SHAPES:
        raise ModelError(
            f"model {name!r} registered with unknown style {style!r}; "
            f"use one of: {', '.join(sorted(_DEFAULT_INPUT_SHAPES))}"
        )

    def decorator(body):
        spec = ModelSpec(name, body, style, int(min_size), standard_width, torch_conv_init)
        params = list(inspect.signature(body).parameters.values())[2:]
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        MODELS.add(name, body, display_name=display_name, defaults=defaults, meta=spec)
        return body

    return decorator


def available():
    """Sorted list of registered model names."""
    return MODELS.names()


def get_spec(name):
    """The :class:`ModelSpec` of ``name``; raises ModelError for unknown names."""
    return MODELS.get(name).meta


def default_input_shape(name):
    """(32, 32, 3) for CIFAR-style models, (224, 224, 3) for ImageNet-style ones."""
    return get_spec(name).default_input_shape


def build(name, num_classes, input_shape=None, width=0, head="linear", init="he_normal",
          **kwargs):
    """Build registered backbone ``name`` with a classifier head.

    Args:
        name: a name from :func:`available`.
        num_classes: number of output classes (>= 1).
        input_shape: ``(H, W, C)``; None for :func:`default_input_shape`.
            Any C >= 1 and H, W >= the model's ``min_size`` (8 for the
            CIFAR-style nets, see :func:`get_spec`).
        width: base width; 0 keeps the architecture's standard. Only models
            registered with a ``standard_width`` accept a nonzero value.
        head: ``"linear"`` (Dense with bias), ``"cosine"``
            (:class:`~cskd_tf.models.heads.CosineClassifier`) or
            ``"linear_nobias"`` (Dense without bias, for Virtual-softmax).
        init: initial weights, ``"he_normal"`` (as built) or ``"torch"``
            (PyTorch's layer defaults, as the CS-KD reference code trains
            from); see :mod:`cskd_tf.models.init`.
        **kwargs: ``scale`` (initial cosine-head scale, default 1.0),
            ``name`` (model name, default ``name``), and any keyword the
            architecture's body declares.

    Returns:
        A functional ``keras.Model`` mapping a normalized float image batch
        to ``{"logits": (B, num_classes), "features": (B, D)}``, both float32.

    Raises:
        ModelError: unknown name, bad argument or unsupported combination.
    """
    spec = get_spec(name)
    num_classes = _check_num_classes(num_classes)
    shape = _check_input_shape(spec, input_shape)
    width = _check_width(spec, width)
    if head not in heads.HEADS:
        raise ModelError(f"unknown head {head!r}; use one of: {', '.join(heads.HEADS)}")
    check_init(init)
    scale = _check_scale(kwargs.pop("scale", 1.0))
    model_name = kwargs.pop("name", name)
    _check_body_kwargs(spec, kwargs)

    inputs = keras.Input(shape=shape, name="image")
    pooled = spec.body(inputs, width, **kwargs)
    model = heads.attach_head(inputs, pooled, num_classes, head=head, scale=scale, name=model_name)
    return apply_init(model, init, conv_rule=spec.torch_conv_init)


def parameter_count(model, trainable_only=True):
    """Number of parameters, by default only trainable ones.

    Trainable-only matches PyTorch's ``sum(p.numel() for p in
    model.parameters())``: Keras also counts BatchNorm moving statistics,
    which PyTorch keeps as buffers.
    """
    weights = model.trainable_weights if trainable_only else model.weights
    total = 0
    for w in weights:
        size = 1
        for dim in w.shape:
            size *= int(dim)
        total += size
    return total


def _check_num_classes(num_classes):
    if not _is_int(num_classes) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def _is_int(value):
    # numbers.Integral admits numpy integers (e.g. ``labels.max() + 1``).
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_input_shape(spec, input_shape):
    if input_shape is None:
        return spec.default_input_shape
    try:
        shape = tuple(int(d) for d in input_shape)
        ok = len(shape) == 3 and all(d == e for d, e in zip(shape, input_shape))
    except (TypeError, ValueError):
        ok = False
    if not ok or min(shape) < 1:
        raise ModelError(
            f"input_shape must be (height, width, channels) of positive integers, "
            f"got {input_shape!r}"
        )
    if min(shape[:2]) < spec.min_size:
        raise ModelError(
            f"model {spec.name!r} needs inputs of at least {spec.min_size}x{spec.min_size} px, "
            f"got {shape[0]}x{shape[1]}; resize the images or pick a CIFAR-style model"
        )
    return shape


def _check_width(spec, width):
    if not _is_int(width) or width < 0:
        raise ModelError(f"width must be a non-negative integer (0 = standard), got {width!r}")
    width = int(width)
    if spec.standard_width is None:
        if width:
            supported = [e.name for e in MODELS.entries() if e.meta.standard_width is not None]
            raise ModelError(
                f"model {spec.name!r} has no width setting; pass width=0 or pick a model "
                f"that has one: {', '.join(sorted(supported))}"
            )
        return 0
    return width or spec.standard_width


def _check_scale(scale):
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ModelError(f"scale must be a positive finite number, got {scale!r}")
    return value


def _check_body_kwargs(spec, kwargs):
    params = inspect.signature(spec.body).parameters
    allowed = [p for p in list(params)[2:] if params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        accepted = ", ".join(list(_BUILD_KWARGS) + allowed)
        raise ModelError(
            f"model {spec.name!r} got unknown argument(s) {', '.join(unknown)}; "
            f"accepted: {accepted}"
        )

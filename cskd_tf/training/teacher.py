"""Loading a frozen KD teacher for the ``kd`` and ``kd_cskd`` methods.

The trainer (and the tuner's hypermodel) hand the teacher to the method:

    method.prepare_training(model, teacher=teacher_for(method, model))

so the methods in :mod:`cskd_tf.losses` only ever see a callable ``images -> logits`` and
know nothing of workdirs or SavedModels.

``config.kd.teacher_workdir`` names either

* a finished ``cskd-train`` workdir (``config.json``, ``data.json`` and a
  checkpoint): the teacher is rebuilt and restored by
  :func:`cskd_tf.training.restore.restore_model` (its own
  architecture, head and input normalization from the workdir; a non-empty
  ``config.kd.teacher_model`` overrides the architecture), without touching the
  running job's seed or precision policy; or
* a SavedModel directory (``saved_model.pb``), or a TF Serving model base
  holding numbered versions of one (the newest is used), e.g. what
  ``cskd-export`` writes: loaded with ``tf.saved_model.load``; its ``logits``
  signature is used if present, else ``serving_default``. The signature must
  take one image tensor; float inputs get the student's [0, 1] images, uint8
  inputs (the cskd-export contract) the same images rounded to 0..255, which
  the export's own preprocessing then resizes. Its output ``logits`` (or its
  single output) is taken as logits.

Either way the teacher is called in inference mode (``training=False``: batch
norm uses its moving statistics and never updates them), its variables are
not tracked by the student (so they are neither optimized, decayed nor
checkpointed), and its outputs are wrapped in ``tf.stop_gradient``. Images of
another spatial size than the teacher's are resized to it.

Bad input raises :class:`~cskd_tf.errors.ModelError` with a one-line message:
no teacher set, a path that does not exist, a directory that is neither kind,
a workdir without checkpoint, or a teacher whose class count (or channel
count) differs from the student's.
"""

from __future__ import annotations

import os

import tensorflow as tf

from cskd_tf.errors import CSKDError, ModelError
from cskd_tf.runs import load_run
from cskd_tf.training.restore import restore_model


class Teacher:
    """A frozen classifier: ``teacher(images) -> logits`` for the student's input images."""

    def __init__(self, call, num_classes, keep=None):
        self._call = call
        self.num_classes = int(num_classes)
        self.keep = keep  # the object owning the variables (a keras model or a SavedModel)

    @property
    def variables(self):
        if hasattr(self.keep, "weights"):  # a Keras model: trainable and BN statistics
            return list(self.keep.weights)
        return list(getattr(self.keep, "variables", ()))

    def __call__(self, images):
        return tf.stop_gradient(tf.cast(self._call(images), tf.float32))


def teacher_for(method, model):
    """The frozen teacher ``method`` trains against, or None when it needs none.

    A method asks for one with the class attribute ``needs_teacher = True``; the teacher
    comes from its ``teacher_workdir`` (config.kd.teacher_workdir; its architecture replaced
    by ``teacher_model`` if that is non-empty) and must fit the student ``model``.
    """
    if not getattr(method, "needs_teacher", False):
        return None
    num_classes, image_shape = student_facts(model)
    return load_teacher(method.teacher_workdir, method.teacher_model, num_classes, image_shape,
                        method=method.name)


def student_facts(model):
    """(num_classes, image_shape) of a CSKDModel."""
    num_classes = int(model.backbone.get_layer("classifier").output.shape[-1])
    image_shape = tuple(int(d) for d in model.backbone.input.shape[1:])
    return num_classes, image_shape


def load_teacher(teacher_workdir, teacher_model, num_classes, image_shape,
                 method="kd") -> Teacher:
    """The teacher in ``teacher_workdir`` (config.kd.teacher_workdir), its architecture
    replaced by ``teacher_model`` if non-empty, checked against the student's classes."""
    path = str(teacher_workdir or "")
    if not path:
        raise ModelError(f"method {method!r} needs a teacher: set --config.kd.teacher_workdir "
                         "to a finished cskd-train workdir or a SavedModel directory")
    if not os.path.exists(path):
        raise ModelError(f"teacher path {path!r} does not exist; set --config.kd.teacher_workdir "
                         "to a finished cskd-train workdir or a SavedModel directory")
    path = _latest_version(path)
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        teacher = _from_saved_model(path, image_shape)
    elif os.path.exists(os.path.join(path, "config.json")):
        teacher = _from_workdir(path, teacher_model, num_classes, image_shape)
    else:
        raise ModelError(f"teacher path {path!r} is neither a cskd-train workdir (no config.json) "
                         "nor a SavedModel directory (no saved_model.pb)")
    _check_classes(path, teacher.num_classes, num_classes)
    return teacher


def _latest_version(path):
    """A TF Serving model base (numbered version folders) resolves to its newest version."""
    if any(os.path.exists(os.path.join(path, name)) for name in ("saved_model.pb", "config.json")):
        return path
    versions = [int(name) for name in os.listdir(path) if name.isdigit()
                and os.path.exists(os.path.join(path, name, "saved_model.pb"))]
    return os.path.join(path, str(max(versions))) if versions else path


def _check_classes(path, teacher_classes, num_classes):
    if int(teacher_classes) != int(num_classes):
        raise ModelError(f"the teacher in {path!r} predicts {teacher_classes} classes but the "
                         f"student's dataset has {num_classes}; use a teacher trained on the same "
                         "dataset (same config.dataset and config.max_classes)")


def _resize_to(images, height, width):
    if height is None or width is None:
        return images
    shape = images.shape
    if shape[1] == height and shape[2] == width:
        return images
    return tf.image.resize(images, (int(height), int(width)))


def _from_workdir(path, teacher_model, student_classes, image_shape):
    try:
        run = load_run(path)
        teacher_config, facts = run.load_config(), run.facts()
    except CSKDError as e:
        raise ModelError(f"cannot use {path!r} as the teacher: {e}") from None
    if teacher_model:  # an explicit architecture overrides the workdir's
        teacher_config.model = teacher_model
    teacher_shape = tuple(int(d) for d in facts["image_shape"])
    if teacher_shape[-1] != int(image_shape[-1]):
        raise ModelError(f"the teacher in {path!r} takes {teacher_shape[-1]}-channel images but "
                         f"the student's have {image_shape[-1]}; use a teacher trained on the "
                         "same dataset")
    num_classes = int(facts["num_classes"])
    # Before the build: a teacher of another dataset fails without building anything.
    _check_classes(path, num_classes, student_classes)
    try:
        model = restore_model(run, teacher_config, facts)
    except CSKDError as e:
        hint = "; or clear --config.kd.teacher_model" if teacher_model else ""
        raise ModelError(f"cannot use {path!r} as the teacher: {e}{hint}") from None
    model.trainable = False

    def call(images):
        images = _resize_to(images, *teacher_shape[:2])
        return model.forward(images, training=False)["logits"]

    return Teacher(call, num_classes, keep=model)


def _from_saved_model(path, image_shape):
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - any load failure is a bad teacher path
        raise ModelError(f"cannot load the SavedModel teacher in {path!r}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    signatures = getattr(loaded, "signatures", {}) or {}
    name = "logits" if "logits" in signatures else "serving_default"
    if name not in signatures:
        raise ModelError(f"the SavedModel teacher in {path!r} has no 'serving_default' or "
                         "'logits' signature; export it with one that maps images to logits")
    fn = signatures[name]
    args, kwargs = fn.structured_input_signature
    if args or len(kwargs) != 1:
        raise ModelError(f"the SavedModel teacher's {name!r} signature in {path!r} must take "
                         f"exactly one image tensor (it takes {len(args) + len(kwargs)})")
    (input_name, spec), = kwargs.items()
    outputs = fn.structured_outputs
    if isinstance(outputs, dict):
        if "logits" in outputs:
            key = "logits"
        elif len(outputs) == 1:
            key = next(iter(outputs))
        else:
            raise ModelError(f"the SavedModel teacher's {name!r} signature in {path!r} has outputs "
                             f"{sorted(outputs)} but no 'logits'")
        out_spec = outputs[key]
    else:
        key, out_spec = None, outputs
    height = width = None
    if spec.shape.rank == 4:
        height, width = spec.shape[1], spec.shape[2]
        if spec.shape[3] is not None and int(spec.shape[3]) != int(image_shape[-1]):
            raise ModelError(f"the SavedModel teacher in {path!r} takes {spec.shape[3]}-channel "
                             f"images but the student's have {image_shape[-1]}")

    def call(images):
        images = _resize_to(tf.convert_to_tensor(images, tf.float32), height, width)
        if spec.dtype == tf.uint8:
            images = tf.image.convert_image_dtype(images, tf.uint8, saturate=True)
        else:
            images = tf.cast(images, spec.dtype)
        result = fn(**{input_name: images})
        return result[key] if key is not None else result

    num_classes = out_spec.shape[-1] if out_spec.shape.rank else None
    if num_classes is None:  # unknown statically: ask the model
        num_classes = call(tf.zeros((1, *image_shape), tf.float32)).shape[-1]
    return Teacher(call, int(num_classes), keep=loaded)

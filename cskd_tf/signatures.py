"""The serving contract: signature names, their inputs and outputs, and the functions.

Both exporters write it: ``CSKDModel.export(path)`` (:func:`export_model`, any trained
model, from what the model carries) and ``cskd-export`` (:mod:`cskd_tf.serving.export`, a
run or a ``.keras`` file, published for TF Serving). It sits below ``models`` and
``serving`` so both can (docs/architecture.md); TensorFlow and Keras are imported only
inside functions, so clients read the names without them.

Every signature takes a batch and answers one row per example, because TF Serving's REST
row format (``{"instances": [...]}`` -> ``{"predictions": [...]}``) requires every output
to have the batch as its first dimension.

``serving_default`` — ``images``: uint8 (N, H, W, C), any H and W, C = training channels
    ``probabilities`` float32 (N, K)   softmax of the logits
    ``logits``        float32 (N, K)   kept so an export can be scored exactly like the
                                       Keras model (ranking and NLL use logits)
    ``top_k_classes`` int32 (N, k)     class indices, best first (k = min(top_k, K))
    ``top_k_scores``  float32 (N, k)   their probabilities
    ``class_names``   string (N, K)    the label list, repeated per row (aligned with
                                       ``probabilities``), so a client needs no side file

``predict_bytes`` — ``image_bytes``: string (N,), encoded JPEG/PNG/GIF/BMP files (what a
    REST client sends as ``{"b64": ...}``); decoded to C channels inside the graph, then
    the same outputs as ``serving_default``.

``embed`` — ``images`` as for ``serving_default``
    ``embeddings``    float32 (N, D)   penultimate features (the ones Recall@k ranks)

Preprocessing is :func:`cskd_tf.images.eval_transform` — the function evaluation maps — so
served inputs go through exactly the transform the reported metrics saw.
"""

from __future__ import annotations

# TensorFlow is imported where it is used: clients import the names below without it.

SERVING_DEFAULT = "serving_default"
PREDICT_BYTES = "predict_bytes"
EMBED = "embed"

IMAGES = "images"
IMAGE_BYTES = "image_bytes"
PROBABILITIES = "probabilities"
LOGITS = "logits"
TOP_K_CLASSES = "top_k_classes"
TOP_K_SCORES = "top_k_scores"
CLASS_NAMES = "class_names"
EMBEDDINGS = "embeddings"

# Assets written beside the SavedModel (assets/): the manifest and the label list.
MANIFEST = "cskd_export.json"
LABELS = "labels.txt"
MANIFEST_FORMAT = "cskd_tf.serving/1"

PREDICT_OUTPUTS = (PROBABILITIES, LOGITS, TOP_K_CLASSES, TOP_K_SCORES, CLASS_NAMES)
# What a client needs to print an answer; the gRPC client asks for only these.
CLIENT_OUTPUTS = (TOP_K_CLASSES, TOP_K_SCORES, CLASS_NAMES)


def input_specs(channels: int) -> dict:
    """{signature name: [tf.TensorSpec]} — the input signature of each endpoint."""
    import tensorflow as tf

    images = tf.TensorSpec([None, None, None, int(channels)], tf.uint8, name=IMAGES)
    return {
        SERVING_DEFAULT: [images],
        PREDICT_BYTES: [tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)],
        EMBED: [images],
    }


def contract(num_classes: int, channels: int, feature_dim: int, top_k: int) -> dict:
    """What TF Serving's metadata reports for each signature: {name: {inputs, outputs}}.

    Each tensor is ``(dtype name, shape)`` with -1 for an unknown dimension, as in the
    ``tensor_shape`` of the metadata endpoint. Used by the export's self-check, the manifest
    and the tests.
    """
    k = min(int(top_k), int(num_classes))
    predict = {
        PROBABILITIES: ("DT_FLOAT", [-1, num_classes]),
        LOGITS: ("DT_FLOAT", [-1, num_classes]),
        TOP_K_CLASSES: ("DT_INT32", [-1, k]),
        TOP_K_SCORES: ("DT_FLOAT", [-1, k]),
        CLASS_NAMES: ("DT_STRING", [-1, num_classes]),
    }
    images = {IMAGES: ("DT_UINT8", [-1, -1, -1, int(channels)])}
    return {
        SERVING_DEFAULT: {"inputs": images, "outputs": predict},
        PREDICT_BYTES: {"inputs": {IMAGE_BYTES: ("DT_STRING", [-1])}, "outputs": predict},
        EMBED: {"inputs": images, "outputs": {EMBEDDINGS: ("DT_FLOAT", [-1, feature_dim])}},
    }


class ServingFunctions:
    """The three endpoint functions of one model, ready for ``ExportArchive.add_endpoint``.

    Args:
      model: a :class:`cskd_tf.models.CSKDModel` (``forward(x)`` -> logits, features).
      preprocess: uint8 batch (N, H, W, C) -> float32 (N, S, S, C) model input; the
        evaluation transform from :func:`cskd_tf.data.eval_preprocess`.
      class_names: the labels, index = class.
      image_shape: (S, S, C) at the model input.
      top_k: how many classes ``top_k_*`` report (capped at the number of classes).
      description: the manifest's account of ``preprocess`` (:func:`describe_preprocessing`).
    """

    def __init__(self, model, preprocess, class_names, image_shape, top_k=5, description=None):
        self.model = model
        self.preprocess = preprocess
        self.class_names = [str(c) for c in class_names]
        self.image_shape = tuple(int(d) for d in image_shape)
        self.top_k = min(int(top_k), len(self.class_names))
        # What the manifest says about the preprocessing (describe_preprocessing).
        self.description = description or {}

    def _forward(self, inputs):
        import tensorflow as tf

        out = self.model.forward(inputs, training=False)
        # Mixed-precision models compute in bfloat16/float16; clients always get float32.
        return tf.cast(out["logits"], tf.float32), tf.cast(out["features"], tf.float32)

    def _predictions(self, inputs):
        import tensorflow as tf

        logits, _ = self._forward(inputs)
        probabilities = tf.nn.softmax(logits, axis=-1)
        scores, classes = tf.math.top_k(probabilities, k=self.top_k)
        names = tf.constant(self.class_names, tf.string)
        rows = tf.shape(logits)[0]
        return {
            PROBABILITIES: probabilities,
            LOGITS: logits,
            TOP_K_CLASSES: classes,
            TOP_K_SCORES: scores,
            CLASS_NAMES: tf.tile(names[tf.newaxis], tf.stack([rows, 1])),
        }

    def serving_default(self, images):
        return self._predictions(self.preprocess(images))

    def predict_bytes(self, image_bytes):
        import tensorflow as tf

        from cskd_tf import images

        channels = self.image_shape[-1]

        def decode_one(encoded):
            # JPEG, PNG, GIF (first frame) and BMP, decoded as training decoded them; an
            # undecodable string fails the whole request with InvalidArgument, as TF Serving
            # reports it.
            image = images.decode(encoded, channels)
            # Images of one request may differ in size: preprocess each one to (S, S, C).
            return self.preprocess(image)

        inputs = tf.map_fn(decode_one, image_bytes,
                           fn_output_signature=tf.TensorSpec(self.image_shape, tf.float32))
        return self._predictions(inputs)

    def embed(self, images):
        _, features = self._forward(self.preprocess(images))
        return {EMBEDDINGS: features}

    def endpoints(self):
        """[(signature name, function, input signature)] in export order."""
        specs = input_specs(self.image_shape[-1])
        return [(SERVING_DEFAULT, self.serving_default, specs[SERVING_DEFAULT]),
                (PREDICT_BYTES, self.predict_bytes, specs[PREDICT_BYTES]),
                (EMBED, self.embed, specs[EMBED])]


# ------------------------------------------------------------------ writing an export
def describe_preprocessing(image_shape, mean, std, augment="none", pixel_max=1.0) -> dict:
    """The manifest's ``preprocessing`` entry: the in-graph steps in words and numbers."""
    size, _, channels = (int(d) for d in image_shape)
    if augment == "finegrained":
        resize = (f"resize the shorter side to {round(size * 256 / 224)} px (bilinear, "
                  f"antialiased), centre crop {size}x{size}")
    else:
        resize = f"resize to {size}x{size} (bilinear, antialiased; identity at that size)"
    scale = "uint8 -> float32 / 255" if float(pixel_max) == 1.0 else \
        "uint8 -> float32 in 0..255 (the model's pixel_max)"
    steps = [scale, f"channels -> {channels} (grey->RGB repeats, RGB->grey luma, alpha dropped)",
             resize]
    if mean is not None:
        steps.append("(x - mean) / std per channel, inside the model")
    return {
        "augment": augment,
        "steps": steps,
        "image_shape": [size, size, channels],
        "pixel_max": float(pixel_max),
        "mean": None if mean is None else list(mean),
        "std": None if std is None else list(std),
    }


def write_saved_model(directory, functions: ServingFunctions):
    """The SavedModel of ``functions``' three endpoints in ``directory`` (Keras ExportArchive)."""
    import keras

    archive = keras.export.ExportArchive()
    # Not archive.track(model): only the variables the endpoints use are saved, so
    # training-only state (e.g. λ, a KD teacher) stays out of the served model.
    for name, fn, spec in functions.endpoints():
        archive.add_endpoint(name, fn, input_signature=spec)
    archive.write_out(str(directory), verbose=False)


def write_assets(directory, functions: ServingFunctions, feature_dim: int, extra=None) -> dict:
    """Writes assets/labels.txt and assets/cskd_export.json; returns the :func:`contract`.

    ``extra``: more manifest fields (cskd-export adds the model name, version, the run's
    data facts and metrics).
    """
    import datetime
    import json
    import os

    from cskd_tf import __version__

    assets = os.path.join(str(directory), "assets")
    os.makedirs(assets, exist_ok=True)
    # ExportArchive offers no public hook for tf.saved_model.Asset objects; the assets/
    # folder is part of the SavedModel layout and TF Serving loads (and copies) the
    # whole version folder, so plain files here travel with the model.
    names = functions.class_names
    with open(os.path.join(assets, LABELS), "w", encoding="utf-8") as f:
        f.write("".join(f"{n}\n" for n in names))
    result = contract(len(names), functions.image_shape[-1], feature_dim, functions.top_k)
    manifest = {
        "format": MANIFEST_FORMAT,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cskd_tf_version": __version__,
        "class_names": names,
        "num_classes": len(names),
        "top_k": functions.top_k,
        "feature_dim": int(feature_dim),
        "preprocessing": functions.description,
        "signatures": {name: {side: {t: {"dtype": d, "shape": s} for t, (d, s) in spec.items()}
                              for side, spec in entry.items()}
                       for name, entry in result.items()},
        **(extra or {}),
    }
    with open(os.path.join(assets, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return result


# -------------------------------------------------------- a model's own serving facts
def model_facts(model, class_names=None, pixel_max=None) -> dict:
    """What a :class:`cskd_tf.models.CSKDModel` carries for serving, checked.

    ``image_shape`` (S, S, C) from the backbone's input shape; ``num_classes`` and
    ``feature_dim`` from a forward pass; ``class_names`` and ``pixel_max`` from the model
    (``CSKDModel(class_names=..., pixel_max=...)``) unless given here; ``mean``/``std``
    from its input normalisation. ModelError (one line) when something is missing.
    """
    import numpy as np

    from cskd_tf.errors import ModelError

    shape = getattr(model.backbone, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0] if len(shape) == 1 else None
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ModelError(f"cannot export a model whose backbone input shape is {shape}: the "
                         "served images are resized to the model's input size, so build the "
                         "backbone with a fixed one, e.g. keras.Input((224, 224, 3))")
    height, width, channels = (int(d) for d in shape[1:])
    if height != width:
        raise ModelError(f"cannot export a {height}x{width} input: the serving preprocessing "
                         "resizes to a square S x S; build the backbone on square inputs")
    zeros = np.zeros((1, height, width, channels), np.float32)
    outputs = model.forward(zeros, training=False)
    num_classes = int(outputs["logits"].shape[-1])
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    names = [str(c) for c in (names if names is not None else range(num_classes))]
    if len(names) != num_classes:
        raise ModelError(f"{len(names)} class names for a model with {num_classes} outputs; "
                         "pass one name per class, in label order")
    pixel_max = pixel_max if pixel_max is not None else getattr(model, "pixel_max", None)
    if pixel_max is None:
        raise ModelError("the model does not say its input pixel range: pass "
                         "CSKDModel(..., pixel_max=255.0) for 0..255 inputs (Keras' image "
                         "loaders; pairs_from_dataset gives pairs.pixel_max) or 1.0 for [0, 1], "
                         "or model.export(path, pixel_max=...)")
    if float(pixel_max) not in (1.0, 255.0):
        raise ModelError(f"pixel_max={pixel_max!r}: use 1.0 (inputs in [0, 1]) or 255.0 "
                         "(inputs in 0..255)")
    normalize = getattr(model, "normalize", None)
    return {"image_shape": (height, width, channels), "num_classes": num_classes,
            "class_names": names, "pixel_max": float(pixel_max),
            "feature_dim": int(outputs["features"].shape[-1]),
            "mean": getattr(normalize, "mean", None), "std": getattr(normalize, "std", None)}


def functions_for_model(model, top_k=5, class_names=None, pixel_max=None):
    """(ServingFunctions, :func:`model_facts`) of a model, from what the model carries.

    The preprocessing is evaluation's resize to the model's input size
    (:func:`cskd_tf.images.eval_transform`), scaled to the model's pixel range.
    """
    from cskd_tf import images

    facts = model_facts(model, class_names, pixel_max)
    size, _, channels = facts["image_shape"]
    preprocess = images.eval_transform("none", size, channels, pixel_max=facts["pixel_max"])
    description = describe_preprocessing(facts["image_shape"], facts["mean"], facts["std"],
                                          "none", facts["pixel_max"])
    functions = ServingFunctions(model, preprocess, facts["class_names"], facts["image_shape"],
                                 top_k=top_k, description=description)
    return functions, facts


def export_model(model, filepath, top_k=5, class_names=None, pixel_max=None, verbose=None):
    """``CSKDModel.export``: the three signatures and the assets in ``filepath``.

    Returns the :func:`contract` written. ``verbose`` (None = on) prints one line.
    """
    from cskd_tf.errors import ModelError

    if int(top_k) < 1:
        raise ModelError(f"top_k must be >= 1 (got {top_k})")
    functions, facts = functions_for_model(model, top_k, class_names, pixel_max)
    write_saved_model(filepath, functions)
    result = write_assets(filepath, functions, facts["feature_dim"],
                          extra={"source": "CSKDModel.export"})
    if verbose is None or verbose:
        print(f"Saved the serving signatures {', '.join(result)} at {filepath}")
    return result

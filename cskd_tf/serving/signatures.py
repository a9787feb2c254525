"""The serving contract: signature names, their inputs and outputs, and the functions.

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

Preprocessing is :func:`cskd_tf.data.eval_preprocess` — the function evaluation maps — so
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
    """

    def __init__(self, model, preprocess, class_names, image_shape, top_k=5):
        self.model = model
        self.preprocess = preprocess
        self.class_names = [str(c) for c in class_names]
        self.image_shape = tuple(int(d) for d in image_shape)
        self.top_k = min(int(top_k), len(self.class_names))

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

        channels = self.image_shape[-1]

        def decode_one(encoded):
            # decode_image reads JPEG, PNG, GIF (first frame) and BMP; an undecodable
            # string fails the whole request with InvalidArgument, as TF Serving reports it.
            image = tf.io.decode_image(encoded, channels=channels, expand_animations=False,
                                       dtype=tf.uint8)
            image.set_shape([None, None, channels])
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

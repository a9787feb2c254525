"""The serving contract, re-exported where serving code and clients have always read it.

The contract itself is :mod:`cskd_tf.signatures` (below ``models``, so ``CSKDModel.export``
writes the same signatures as ``cskd-export``).
"""

from cskd_tf.signatures import (  # noqa: F401
    CLASS_NAMES, CLIENT_OUTPUTS, EMBED, EMBEDDINGS, IMAGE_BYTES, IMAGES, LABELS, LOGITS,
    MANIFEST, PREDICT_BYTES, PREDICT_OUTPUTS, PROBABILITIES, SERVING_DEFAULT, TOP_K_CLASSES,
    TOP_K_SCORES, ServingFunctions, contract, input_specs)

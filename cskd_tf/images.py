"""The deterministic image transforms shared by the data pipeline and the serving graph.

:func:`eval_transform` is what evaluation maps over a split (``cskd_tf.data.eval_dataset``)
and what every exported serving signature runs in its graph, so a served image meets
exactly the preprocessing the reported metrics saw. It sits below ``data`` and ``models``
because both need it: the data pipeline, and ``CSKDModel.export`` (models may not import
data, see docs/architecture.md).
"""

from __future__ import annotations

import tensorflow as tf

from cskd_tf.errors import ConfigError

# The eval transforms by recipe name; every other recipe name resizes to S×S.
SHORTER_SIDE_CROP = ("finegrained",)


def decode(payload: tf.Tensor, channels: int) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 (H, W, ``channels``), JPEGs as PIL decodes them.

    ``tf.io.decode_image`` decodes JPEGs with libjpeg's fast integer IDCT, PIL (which the
    reference code's torchvision loaders use) with the accurate one; the two differ by about
    1/255 per pixel on average. ``INTEGER_ACCURATE`` gives PIL's pixels exactly (tested).
    """
    def jpeg():
        return tf.io.decode_jpeg(payload, channels=channels, dct_method="INTEGER_ACCURATE")

    def other():
        return tf.io.decode_image(payload, channels=channels, expand_animations=False,
                                  dtype=tf.uint8)

    image = tf.cond(tf.io.is_jpeg(payload), jpeg, other)
    image.set_shape([None, None, channels])
    return image


def resize_square(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize to ``size``×``size``, antialiased.

    Antialiasing matches PIL/torchvision when shrinking (64 -> 32 px); at the same size the
    resize returns its input exactly.
    """
    return tf.image.resize(image, [size, size], antialias=True)


def fix_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Makes the last axis ``channels`` long: grey -> RGB, RGBA -> RGB, RGB -> grey."""
    static = image.shape[-1]
    if static is not None:  # decided while tracing: no branch in the graph
        if static == channels:
            return image
        if channels == 3:
            return tf.image.grayscale_to_rgb(image) if static == 1 else image[..., :3]
        return tf.image.rgb_to_grayscale(image[..., :3])
    have = tf.shape(image)[-1]
    if channels == 3:
        image = tf.cond(tf.equal(have, 1),
                        lambda: tf.concat([image, image, image], axis=-1),
                        lambda: image[..., :3])
    else:
        image = tf.cond(tf.equal(have, 1),
                        lambda: image,
                        lambda: tf.image.rgb_to_grayscale(image[..., :3]))
    return image


def eval_transform(name: str, image_size: int, channels: int, pixel_max: float = 1.0):
    """Deterministic eval preprocessing: image (H, W, C) or batch (N, H, W, C) -> float32.

    uint8 is scaled to [0, 1] (float input is taken to be in [0, 1] already), the channels
    are fixed, then ``finegrained`` resizes the shorter side to S·256/224 and centre-crops
    S×S (S = 224: resize 256, crop 224, the ImageNet evaluation); every other name resizes
    to S×S. ``pixel_max`` is the model's value for a full-intensity pixel: 1.0 keeps [0, 1],
    255.0 gives Keras' 0..255 convention (``image_dataset_from_directory``).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"eval transform name {name!r} is not a recipe name")
    size, c = int(image_size), int(channels)

    def transform(image):
        image = tf.convert_to_tensor(image)
        image = tf.image.convert_image_dtype(image, tf.float32)
        image = fix_channels(image, c)
        if name in SHORTER_SIDE_CROP:
            shape = tf.shape(image)
            h, w = shape[-3], shape[-2]
            short = tf.minimum(h, w)
            target = round(size * 256 / 224)
            # torchvision's Resize(256): the shorter side to 256, the longer to
            # int(256·long/short), truncated (reference datasets.py:207).
            nh = tf.maximum(size, target * h // short)
            nw = tf.maximum(size, target * w // short)
            image = tf.image.resize(image, tf.stack([nh, nw]), antialias=True)
            image = tf.image.crop_to_bounding_box(image, (nh - size) // 2, (nw - size) // 2,
                                                  size, size)
        else:
            image = resize_square(image, size)
        if float(pixel_max) != 1.0:
            image = image * float(pixel_max)
        static = image.shape[:-3].as_list() + [size, size, c]
        image.set_shape(static)
        return image

    return transform

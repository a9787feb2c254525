"""Per-dataset image augmentation, as in the CS-KD paper, with stateless randomness.

Every training transform has the signature ``(image, seed) -> image``:

* ``image``: float32 tensor (H, W, C) in [0, 1], any H and W (decoded source image);
* ``seed``: int32/int64 tensor of shape [2], a stateless seed; the same seed always gives
  the same output, which is what makes the pair stream reproducible and resumable;
* result: float32 tensor (S, S, C) in [0, 1], S = the model's input size.

Every eval transform maps an image (H, W, C) or a batch (N, H, W, C), uint8 or float, to
float32 (S, S, C) in [0, 1]. Normalisation by the dataset mean/std is done inside the model,
not here, so exported models take plain [0, 1] pixels.

Transforms (``config.augment``):

========== ======================================== ==========================================
name       train                                    eval
========== ======================================== ==========================================
cifar      resize to S if needed, zero-pad 4,       resize to S (identity at native size)
           random S crop, horizontal flip
lowshot_   the same as cifar; meant for budgeted    resize to S
cifar      TinyImageNet runs (64 px -> 32 first)
tinyimage  random-resized-crop to S (area 8-100 %,  resize to S
net        aspect 3/4-4/3) + horizontal flip
finegrain  random-resized-crop to S + flip          resize shorter side to S*256/224, centre
ed                                                  crop S (S=224: resize 256, crop 224)
digits     resize to S if needed, zero-pad 1,       resize to S
           random S crop; no flip (digits are not
           mirror-symmetric)
none       resize to S                              resize to S
========== ======================================== ==========================================
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from cskd_tf.errors import ConfigError

AUGMENTS = ("none", "cifar", "lowshot_cifar", "tinyimagenet", "finegrained", "digits")

TrainFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
EvalFn = Callable[[tf.Tensor], tf.Tensor]


def check_name(name: str) -> str:
    if name not in AUGMENTS:
        raise ConfigError(f"config.augment={name!r} is not one of auto, {', '.join(AUGMENTS)}; "
                          f"set --config.augment to one of them")
    return name


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    # Antialiasing matches PIL/torchvision when shrinking (64 -> 32 px); at the same size
    # the resize returns its input exactly.
    return tf.image.resize(image, [size, size], antialias=True)


def _pad_crop_flip(image, seed, size, channels, pad, flip):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = _resize(image, size)
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(image, [size, size, channels], seed=seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image


def _random_resized_crop_flip(image, seed, size, channels):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    # The torchvision RandomResizedCrop defaults; when no box fits in 10 tries the whole
    # image is used (torchvision would centre-crop instead, a rare difference).
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        min_object_covered=0.0, aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, extent)
    image = _resize(image, size)
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def train_transform(name: str, image_size: int, channels: int) -> TrainFn:
    """The training augmentation ``name`` at input size ``image_size``: (image, seed) -> image."""
    check_name(name)
    size, c = int(image_size), int(channels)

    def transform(image, seed):
        image = tf.convert_to_tensor(image, tf.float32)
        if name in ("cifar", "lowshot_cifar"):
            out = _pad_crop_flip(image, seed, size, c, pad=4, flip=True)
        elif name == "digits":
            out = _pad_crop_flip(image, seed, size, c, pad=1, flip=False)
        elif name in ("tinyimagenet", "finegrained"):
            out = _random_resized_crop_flip(image, seed, size, c)
        else:  # none
            out = _resize(image, size)
        out = tf.ensure_shape(out, [size, size, c])
        return out

    return transform


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


def eval_transform(name: str, image_size: int, channels: int) -> EvalFn:
    """Deterministic eval preprocessing: image (H, W, C) or batch (N, H, W, C) -> float32."""
    check_name(name)
    size, c = int(image_size), int(channels)

    def transform(image):
        image = tf.convert_to_tensor(image)
        # uint8 -> [0, 1]; float input is taken to be in [0, 1] already.
        image = tf.image.convert_image_dtype(image, tf.float32)
        image = fix_channels(image, c)
        if name == "finegrained":
            shape = tf.shape(image)
            h, w = shape[-3], shape[-2]
            short = tf.cast(tf.minimum(h, w), tf.float32)
            target = round(size * 256 / 224)
            scale = target / short
            nh = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
            nw = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
            image = tf.image.resize(image, tf.stack([nh, nw]), antialias=True)
            image = tf.image.crop_to_bounding_box(image, (nh - size) // 2, (nw - size) // 2,
                                                  size, size)
        else:
            image = _resize(image, size)
        static = image.shape[:-3].as_list() + [size, size, c]
        image.set_shape(static)
        return image

    return transform

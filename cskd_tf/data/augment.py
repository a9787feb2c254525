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
tinyimage  torchvision's RandomResizedCrop to S      resize to S
net        (area 8-100 %, aspect 3/4-4/3, 10 tries,
           centre-crop fallback) + horizontal flip
finegrain  the same RandomResizedCrop to S + flip   resize shorter side to S*256/224, centre
ed                                                  crop S (S=224: resize 256, crop 224)
digits     resize to S if needed, zero-pad 1,       resize to S
           random S crop; no flip (digits are not
           mirror-symmetric)
none       resize to S                              resize to S
========== ======================================== ==========================================

Which recipe uses which (cskd_tf/recipes.py, from the reference's datasets.py): cifar100 ->
``cifar``; tinyimagenet -> ``tinyimagenet`` (RandomResizedCrop(32) of the 64 px images);
cub200, dogs, mit67 and imagenet -> ``finegrained`` (RandomResizedCrop(224), eval resize 256
+ centre crop 224). The budgeted configs/tinyimagenet_lowshot_cpu.py uses ``lowshot_cifar``.
"""

from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from cskd_tf import images
from cskd_tf.errors import ConfigError
# Re-exported: the data pipeline's users call them through this module.
from cskd_tf.images import fix_channels  # noqa: F401

AUGMENTS = ("none", "cifar", "lowshot_cifar", "tinyimagenet", "finegrained", "digits")

TrainFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
EvalFn = Callable[[tf.Tensor], tf.Tensor]


# What each recipe does, in the words cskd-train prints (one line with the image size).
DESCRIPTIONS = {
    "none": "none (resize only)",
    "cifar": "zero-pad 4 px, random crop, horizontal flip",
    "lowshot_cifar": "zero-pad 4 px, random crop, horizontal flip",
    "tinyimagenet": "random-resized-crop (area 8-100 %), horizontal flip",
    "finegrained": "random-resized-crop (area 8-100 %), horizontal flip; eval: resize the "
                   "shorter side to S*256/224, centre crop",
    "digits": "zero-pad 1 px, random crop, no flip",
}
# Pad-and-crop recipes made for small native images (8 to 64 px).
SMALL_IMAGE_AUGMENTS = ("cifar", "lowshot_cifar", "digits")


def check_name(name: str) -> str:
    if name not in AUGMENTS:
        raise ConfigError(f"config.augment={name!r} is not one of auto, {', '.join(AUGMENTS)}; "
                          f"set --config.augment to one of them")
    return name


_resize = images.resize_square


def _pad_crop_flip(image, seed, size, channels, pad, flip):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = _resize(image, size)
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(image, [size, size, channels], seed=seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image


RRC_SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop defaults (the reference's)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_TRIES = 10


def random_resized_crop_box(shape, seed, scale=RRC_SCALE, ratio=RRC_RATIO, tries=RRC_TRIES):
    """torchvision's ``RandomResizedCrop.get_params`` with stateless randomness: (i, j, h, w).

    For an H×W image, each of ``tries`` candidates draws s ~ U(scale), log r ~ U(log ratio)
    and takes w = round(√(s·H·W·r)), h = round(√(s·H·W/r)) (round half to even, as Python's
    ``round``); the first candidate with 0 < w ≤ W and 0 < h ≤ H is kept, with top-left corner
    i ~ U{0..H−h}, j ~ U{0..W−w}. With none valid: the centre crop whose aspect ratio W/H is
    clamped to ``ratio`` (the whole image when W/H lies inside it). The candidates are drawn
    all at once and the first valid one picked, which has torchvision's distribution (its
    loop draws the same independent candidates and stops at the first valid one).
    Source: torchvision/transforms/transforms.py, RandomResizedCrop.get_params.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    height, width = shape[0], shape[1]
    fh, fw = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    area = fh * fw
    target = area * tf.cast(tf.random.stateless_uniform(
        [tries], seeds[0], minval=scale[0], maxval=scale[1]), tf.float64)
    log_r = tf.random.stateless_uniform([tries], seeds[1], minval=math.log(ratio[0]),
                                        maxval=math.log(ratio[1]))
    r = tf.exp(tf.cast(log_r, tf.float64))
    ws = tf.cast(tf.round(tf.sqrt(target * r)), tf.int32)
    hs = tf.cast(tf.round(tf.sqrt(target / r)), tf.int32)
    valid = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)  # 0 if none is valid
    found = tf.reduce_any(valid)
    # Fallback: the centre crop with the aspect ratio clamped into ``ratio``.
    in_ratio = fw / fh
    fb_w = tf.where(in_ratio > ratio[1], tf.cast(tf.round(fh * ratio[1]), tf.int32), width)
    fb_h = tf.where(in_ratio < ratio[0], tf.cast(tf.round(fw / ratio[0]), tf.int32), height)
    h = tf.where(found, hs[first], fb_h)
    w = tf.where(found, ws[first], fb_w)
    # U{0..n}: floor(u·(n+1)) for u ~ U[0, 1); a uniform integer like torch.randint.
    u = tf.random.stateless_uniform([2], seeds[2], dtype=tf.float64)
    i_rand = tf.minimum(tf.cast(tf.floor(u[0] * tf.cast(height - h + 1, tf.float64)), tf.int32),
                        height - h)
    j_rand = tf.minimum(tf.cast(tf.floor(u[1] * tf.cast(width - w + 1, tf.float64)), tf.int32),
                        width - w)
    i = tf.where(found, i_rand, (height - h) // 2)
    j = tf.where(found, j_rand, (width - w) // 2)
    return i, j, h, w


def _random_resized_crop_flip(image, seed, size, channels):
    # torchvision's RandomResizedCrop(size) then RandomHorizontalFlip, as the reference's
    # datasets.py does for TinyImageNet and the fine-grained sets. The reference crops PIL
    # images, whose bilinear resize always antialiases (a triangle filter widened by the
    # shrink factor); tf.image.resize(bilinear, antialias=True) is that filter (plain
    # bilinear when enlarging, as PIL), so _resize is the closest TF resize.
    seeds = tf.random.experimental.stateless_split(seed, 2)
    i, j, h, w = random_resized_crop_box(tf.shape(image), seeds[0])
    image = image[i:i + h, j:j + w, :]
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


def eval_transform(name: str, image_size: int, channels: int) -> EvalFn:
    """Deterministic eval preprocessing: image (H, W, C) or batch (N, H, W, C) -> float32.

    The transform lives in :mod:`cskd_tf.images`, below this package, because the serving
    graph of ``CSKDModel.export`` runs it too.
    """
    check_name(name)
    return images.eval_transform(name, image_size, channels)

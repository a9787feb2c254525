"""The data API the trainer, evaluator and exporter use: prepare, train/eval datasets.

Typical use::

    info, splits = prepare(config)                        # builds or reuses the shard cache
    train, steps = train_dataset(config, info, splits["train"])
    val = eval_dataset(config, info, splits["val"])
    serve_fn = eval_preprocess(info, info.augment)        # same function as eval uses

``config.protocol`` decides which splits a run sees (:func:`apply_protocol`):

* ``tune``: train, val (the source's own, else ``val_fraction`` held out of train by
  :func:`cskd_tf.data.sources.select`) and test where the source has one; val selects
  models and feeds the tuner and temperature scaling.
* ``paper`` (Yun et al., CVPR 2020, and the reference alinlab/cs-kd ``datasets.py``): the
  source's official train split whole (nothing held out) and its labelled evaluation split
  as test — a source without a test split (TinyImageNet, ImageNet) lends its official val
  split as test; a source with both (digits) leaves its val unused, so train stays the
  official train split. There is no val split, hence no model selection and no
  temperature scaling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import tensorflow as tf

from cskd_tf.data import augment as augment_lib
from cskd_tf.data import pairs
from cskd_tf.data.shards import PreparedSplit, prepare_cache
from cskd_tf.data.sources import get_source
from cskd_tf.errors import ConfigError


@dataclass
class DatasetInfo:
    """What the model and the reports need to know about a prepared dataset.

    ``image_shape`` is (H, W, C) at the model input; ``mean``/``std`` are per channel in
    [0, 1] units (published values for CIFAR and ImageNet-like data, else computed from the
    train split when the cache was built) — the model normalises, the pipeline does not.
    ``splits`` maps split name -> number of examples; ``train_counts[c]`` is class c's
    training examples. ``augment`` is the resolved ``config.augment``.
    """

    name: str
    num_classes: int
    class_names: list
    image_shape: tuple
    mean: tuple
    std: tuple
    splits: dict
    train_counts: np.ndarray
    augment: str = "none"
    cache_path: str = ""
    native_shape: tuple | None = field(default=None)  # source image shape, if all alike


def _check(config):
    for name in ("image_size", "max_classes", "max_train_per_class", "shuffle_buffer",
                 "steps_per_epoch"):
        if int(config[name]) < 0:
            raise ConfigError(f"config.{name} must be >= 0 (got {config[name]!r})")
    if config.pair_mode not in ("memory", "stream"):
        raise ConfigError(f"config.pair_mode={config.pair_mode!r} is not 'memory' or 'stream'; "
                          f"set --config.pair_mode to one of them")
    if config.augment != "auto":
        augment_lib.check_name(config.augment)
    if not 0 <= config.val_fraction < 1:
        raise ConfigError(f"config.val_fraction must be in [0, 1) (got {config.val_fraction!r})")
    if bool(config.input_mean) != bool(config.input_std):
        raise ConfigError("config.input_mean and config.input_std must be set together (or "
                          "both left () for the dataset's statistics)")
    if any(float(s) <= 0 for s in config.input_std):
        raise ConfigError(f"config.input_std must be positive (got {tuple(config.input_std)})")
    if config.protocol not in ("paper", "tune"):
        raise ConfigError(f"config.protocol={config.protocol!r} is not 'paper' or 'tune'; "
                          f"set --config.protocol to one of them")


def apply_protocol(splits: dict, protocol: str, held_out_val: bool, where: str = "") -> dict:
    """The splits a run under ``protocol`` sees (the module docstring states the rule).

    ``held_out_val`` says the cache's val was held out of train (a cache built under
    ``tune`` for a source without its own val): a ``paper`` run cannot use that cache,
    since its train split is not the whole official one.
    """
    if protocol == "tune":
        return dict(splits)
    if held_out_val:
        raise ConfigError(f"the shard cache {where} holds a val split held out of train "
                          "(built with config.protocol='tune'), so its train split is not the "
                          "whole training set; rebuild it with --config.protocol=paper or train "
                          "with --config.protocol=tune")
    out = {k: v for k, v in splits.items() if k != "val"}
    if "test" not in splits and "val" in splits:
        out["test"] = replace(splits["val"], name="test")
    return out


def prepare(config):
    """Resolves ``config.dataset``, builds or reuses its shard cache, and validates it.

    Returns (DatasetInfo, {split name: PreparedSplit}); splits are "train" and, where the
    data has them, "val" (else held out of train) and "test" — under config.protocol="paper"
    train and test only (see the module docstring).
    """
    _check(config)
    source = get_source(config.dataset, config.data_dir)
    # The paper protocol trains on the whole training split: nothing is held out.
    val_fraction = 0.0 if config.protocol == "paper" else config.val_fraction
    meta, splits = prepare_cache(
        source, cache_dir=config.cache_dir, max_classes=config.max_classes,
        max_train_per_class=config.max_train_per_class, val_fraction=val_fraction,
        seed=config.seed)
    # A prebuilt cache (dataset=shards) keeps whatever split rules it was built with.
    held_out = source.prebuilt and (meta.get("spec") or {}).get("val_fraction") is not None
    splits = apply_protocol(splits, config.protocol, held_out, where=config.data_dir)
    size = int(config.image_size) or int(source.default_image_size)
    name = source.default_augment if config.augment == "auto" else config.augment
    channels = int(meta["channels"])
    mean = tuple(float(m) for m in (config.input_mean or source.mean or meta["train_mean"]))
    # A constant channel would make the model divide by zero.
    std = tuple(max(float(s), 1e-3)
                for s in (config.input_std or source.std or meta["train_std"]))
    for key, values in (("input_mean", mean), ("input_std", std)):
        if len(values) != channels:
            raise ConfigError(f"config.{key} has {len(values)} values but the images have "
                              f"{channels} channels; give one per channel, or () for the "
                              f"dataset's statistics")
    native = meta.get("native_shape")
    info = DatasetInfo(
        name=config.dataset, num_classes=len(meta["class_names"]),
        class_names=list(meta["class_names"]), image_shape=(size, size, channels),
        mean=mean, std=std, splits={k: v.num_examples for k, v in splits.items()},
        train_counts=splits["train"].counts.copy(), augment=name,
        cache_path=os.path.dirname(splits["train"].directory),
        native_shape=tuple(native) if native else None)
    return info, splits


def describe_images(info: DatasetInfo) -> str:
    """The line cskd-train prints: model input size and the augmentation, by name."""
    size, _, channels = info.image_shape
    native = ""
    if info.native_shape:
        h, w = info.native_shape[:2]
        native = (f" (source images {h}x{w}" + (", resized" if (h, w) != (size, size) else "")
                  + ")")
    described = augment_lib.DESCRIPTIONS.get(info.augment, info.augment)
    return f"{size}x{size}x{channels}{native}, augmentation {info.augment}: {described}"


def mismatch_warning(config, info: DatasetInfo) -> str | None:
    """One line when the config's image recipe was made for other images, else None.

    A pad-and-crop augmentation of small images (digits, cifar) at a large input size is
    what a config written for another dataset gives an image folder (224 px, the folder
    source's default, with digits' 1-px padding): slow, and not the augmentation meant.
    """
    size = int(info.image_shape[0])
    if info.augment in augment_lib.SMALL_IMAGE_AUGMENTS and size > 64:
        return (f"config.augment={info.augment!r} pads and crops small images, but the model "
                f"input is {size} px ({config.dataset}); this config was made for another "
                "dataset: start from configs/imagefolder.py for your own folder, or set "
                "--config.image_size and --config.augment")
    return None


def _split(config, split):
    if isinstance(split, str):
        return prepare(config)[1][split]
    return split


def _memory_fetch(split: PreparedSplit):
    payloads, _ = split.load()
    if split.kind == "raw":
        # Raw records of an array source share one shape: gather from one uint8 tensor.
        data = tf.constant(np.frombuffer(b"".join(payloads), np.uint8)
                           .reshape((len(payloads),) + tuple(split.raw_shape)))

        def fetch(index):
            return tf.image.convert_image_dtype(tf.gather(data, index), tf.float32)
    else:
        data = tf.constant(payloads, tf.string)

        def fetch(index):
            return tf.image.convert_image_dtype(split.decode(tf.gather(data, index)), tf.float32)
    return fetch


def train_dataset(config, info: DatasetInfo, split, views=("anchor", "partner"), start_epoch=0,
                  num_shards=1, shard_index=0, batch_size=None, drop_remainder=None):
    """The training pair stream over epochs ``start_epoch .. config.num_epochs - 1``.

    Elements are ``(x, y)`` when ``views == ("anchor",)``, else ``((img per view...), y)``;
    views are names from ("anchor", "partner", "view2"), view2 being a second independent
    augmentation of the anchor. Images are float32 (S, S, C) in [0, 1]; y is int32.
    ``batch_size`` defaults to ``config.batch_size`` (pass the per-worker size when
    sharding). Returns (dataset, steps_per_epoch): ``ceil(N / batch_size)`` batches, the
    last one short, so every training example is an anchor exactly once per epoch, unless
    ``drop_remainder`` (full batches only; None = only when sharded, which needs it) or
    ``config.steps_per_epoch > 0`` (that many full batches per epoch). ``config.pair_mode``
    picks the exact in-memory sampler or the streaming one (see cskd_tf.data.pairs).
    """
    split = _split(config, split)
    size, channels = int(info.image_shape[0]), int(info.image_shape[2])
    aug = None if info.augment is None else augment_lib.train_transform(info.augment, size,
                                                                        channels)
    common = dict(views=views, augment=aug, seed=int(config.seed), start_epoch=int(start_epoch),
                  num_epochs=int(config.num_epochs),
                  batch_size=int(batch_size or config.batch_size),
                  num_shards=int(num_shards), shard_index=int(shard_index),
                  steps_per_epoch=int(config.steps_per_epoch),
                  drop_remainder=(int(num_shards) > 1 if drop_remainder is None
                                  else bool(drop_remainder)))
    if config.pair_mode == "stream":
        return pairs.stream_pairs(split, shuffle_buffer=int(config.shuffle_buffer), **common)
    return pairs.memory_pairs(_memory_fetch(split), split.counts, **common)


def eval_preprocess(info: DatasetInfo, augment_name: str | None = None):
    """The eval transform: decoded uint8 image (H, W, C) or batch, any size -> float32 input.

    It is the function :func:`eval_dataset` maps, so a serving graph that uses it sees the
    same inputs as evaluation did.
    """
    size, channels = int(info.image_shape[0]), int(info.image_shape[2])
    return augment_lib.eval_transform(augment_name or info.augment, size, channels)


def eval_dataset(config, info: DatasetInfo, split, batch_size=None) -> tf.data.Dataset:
    """(x, y) batches of a split in a fixed order (class by class), no example dropped."""
    split = _split(config, split)
    preprocess = eval_preprocess(info, info.augment)

    def load(payload, label):
        return preprocess(split.decode(payload)), tf.cast(label, tf.int32)

    return (split.records()
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(int(batch_size or config.eval_batch_size))
            .prefetch(tf.data.AUTOTUNE))

"""CS-KD pairs from the user's own ``tf.data.Dataset`` of (image, label).

    pairs = pairs_from_dataset(ds, batch_size=32, seed=0)   # ((anchor, partner), label)
    model.fit(pairs, epochs=...)

``ds`` is any finite dataset of ``(image, label)``, batched or not — e.g. what
``keras.utils.image_dataset_from_directory`` or ``tfds.load(..., as_supervised=True)``
returns. It goes through the per-class shard cache of :mod:`cskd_tf.data.shards` like
every project source: iterated once, written once as per-class TFRecord files, and
reused by later calls with the same data. The cache key is ``fingerprint`` when given
(then a cached dataset is not even iterated), else a hash of the data itself that does
not depend on the order of the examples (a dataset that reshuffles every iteration
keeps its cache).

The pair stream is that of :func:`cskd_tf.data.pair_dataset` (the reference
``PairBatchSampler`` semantics, :mod:`cskd_tf.data.pairs`): every example is an anchor
exactly once per epoch (the last batch may be short), its partner is drawn uniformly
from its class, anchor and partner are augmented independently, and the whole stream
is reproducible from ``seed``. Each iteration (each ``fit`` epoch) draws new epochs.

Images, as for the ``imagefolder`` source: any size and channel count. They are kept
as uint8 (raw when they all share one shape, else lossless PNG), converted to
``channels`` (grey→RGB repeats, RGBA→RGB drops alpha), and brought to one size by the
augmentation (``augment`` a name of :data:`cskd_tf.data.AUGMENTS` at ``image_size``, or
``"none"``: resize only). Values keep the input's range: uint8 and 0..255 floats (what
Keras' image loaders yield) come out as float32 in 0..255, [0, 1] floats as [0, 1], so
a model that takes the user's dataset takes the pairs too. The range of float images is
read from the first element (any value above 1 means 0..255); a later value above 1 in
a [0, 1] dataset is an error.

Bad input raises :class:`~cskd_tf.errors.DataError` with a one-line fix: labels that are
not integers (e.g. one-hot), negative or ≥ ``num_classes``, not 0..C−1 with an example of
every class (it names the labels seen), or all one class; an infinite dataset, or one
of unknown size that does not end within ``max_examples``; an element that is not
(image, label); images of different sizes with no ``image_size``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

from cskd_tf.data import augment as augment_lib
from cskd_tf.data import pairs
from cskd_tf.data.pipeline import _memory_fetch
from cskd_tf.data.shards import prepare_cache
from cskd_tf.data.sources import Listing, Source, SplitData
from cskd_tf.errors import DataError

DEFAULT_MAX_EXAMPLES = 10_000_000


class _Element:
    """How one dataset element looks: batched or not, image rank, channel count."""

    def __init__(self, ds):
        spec = ds.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise DataError(f"pairs_from_dataset needs a dataset of (image, label) pairs, got "
                            f"elements {spec}; map it to (image, label) first")
        image, label = spec
        if not isinstance(image, tf.TensorSpec) or not isinstance(label, tf.TensorSpec):
            raise DataError("pairs_from_dataset needs (image, label) tensors (no dicts or "
                            "ragged images); map the dataset to (image, label) first")
        if not (label.dtype.is_integer or label.dtype.is_bool):
            raise DataError(f"pairs_from_dataset needs integer class labels, got "
                            f"{label.dtype.name} of shape {label.shape} (one-hot?); use "
                            "integer labels (image_dataset_from_directory: label_mode='int')")
        if label.shape.rank not in (0, 1):
            raise DataError(f"pairs_from_dataset needs one integer label per image, got labels "
                            f"of shape {label.shape}; use integer labels (not one-hot)")
        self.batched = label.shape.rank == 1
        rank = image.shape.rank
        per_image = None if rank is None else rank - int(self.batched)
        if per_image not in (2, 3):
            raise DataError(f"pairs_from_dataset needs images (H, W[, C]) per example, got "
                            f"element images of shape {image.shape}")
        self.has_channels = per_image == 3
        self.channels = int(image.shape[-1]) if self.has_channels and image.shape[-1] else None
        self.dtype = image.dtype


def _value_scale(ds, element) -> float:
    """255 for integer images and 0..255 floats, 1 for [0, 1] floats (see module docstring)."""
    if element.dtype.is_integer:
        return 255.0
    for image, _ in ds.take(1):
        return 255.0 if float(tf.reduce_max(image)) > 1.0 else 1.0
    raise DataError("pairs_from_dataset got an empty dataset; pass one with examples")


def _examples(ds, element, scale, channels, max_examples):
    """Yields (uint8 image (H, W, C), label) once over ``ds``, with the checks."""
    count = 0
    for images, labels in ds.as_numpy_iterator():
        if not element.batched:
            images, labels = images[None], np.asarray(labels)[None]
        if not np.issubdtype(images.dtype, np.integer) and images.size and \
                scale == 1.0 and float(images.max()) > 1.0 + 1e-6:
            raise DataError("pairs_from_dataset: the first images were in [0, 1] but a later "
                            "one has values above 1; scale all images alike (0..255 or [0, 1])")
        for image, label in zip(images, labels):
            yield _to_uint8(image, scale, channels), int(label)
            count += 1
            if count > max_examples:
                raise DataError(f"pairs_from_dataset: the dataset did not end within "
                                f"max_examples={max_examples} examples (infinite or unknown "
                                "size); pass a finite dataset (ds.take(n)) or raise max_examples")


def _to_uint8(image, scale, channels):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float64) * (255.0 / scale)), 0, 255)
        image = image.astype(np.uint8)
    have = image.shape[-1]
    if have != channels:
        image = augment_lib.fix_channels(tf.constant(image), channels).numpy()
    return image


def _describe(values) -> str:
    values = [int(v) for v in values]
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    shown = ", ".join(map(str, values[:8]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > 8 else "")


def check_labels(labels, num_classes=None):
    """DataError unless the labels are the class indices 0..C−1, each with an example.

    C is ``num_classes`` or max label + 1. A class without an example can have no anchor
    and no partner, so it is a labelling mistake (labels 10..13 for four classes) rather
    than data; one class makes the cross-entropy of a 1-way softmax identically zero, so
    there is nothing to learn.
    """
    seen = np.unique(np.asarray(labels, np.int64))
    count = int(num_classes) if num_classes is not None else int(seen.max()) + 1
    if len(seen) < 2:
        raise DataError(f"pairs_from_dataset: every label is {int(seen[0])}, one class: a "
                        "softmax over one class is always 1 and its cross-entropy 0, so "
                        "nothing is learned; give examples of at least two classes")
    missing = np.setdiff1d(np.arange(count), seen)
    if missing.size:
        raise DataError(f"pairs_from_dataset: labels must be 0..C-1 with an example of every "
                        f"class, but the labels seen are {_describe(seen)} ({len(seen)} "
                        f"classes), so class(es) {_describe(missing)} of 0..{count - 1} have "
                        f"none; remap the labels to 0..{len(seen) - 1} (e.g. "
                        f"ds.map(lambda x, y: (x, lookup[y])))"
                        + ("" if num_classes is None else " or lower num_classes"))


class _DatasetSource(Source):
    """A :class:`~cskd_tf.data.sources.Source` over the examples of a tf.data.Dataset."""

    name = "tfdata"
    default_augment = "none"

    def __init__(self, ds, element, scale, channels, fingerprint, num_classes, max_examples,
                 class_names=None):
        super().__init__("")
        self._class_names = class_names
        self._ds, self._element, self._scale = ds, element, scale
        self.channels = int(channels)
        self._given = fingerprint
        self._num_classes = num_classes
        self._max_examples = int(max_examples)
        self._loaded = None

    def _settings(self) -> str:
        # What changes the cached bytes besides the data: the channel conversion and scale.
        names = "" if self._class_names is None else ",names=" + hashlib.sha256(
            "\n".join(map(str, self._class_names)).encode()).hexdigest()[:8]
        return (f"channels={self.channels},scale={self._scale:g},classes={self._num_classes}"
                + names)

    def _load_examples(self):
        if self._loaded is None:
            images, labels = [], []
            for image, label in _examples(self._ds, self._element, self._scale, self.channels,
                                          self._max_examples):
                images.append(image)
                labels.append(label)
            if not labels:
                raise DataError("pairs_from_dataset got an empty dataset; pass one with "
                                "examples")
            labels = np.asarray(labels, np.int64)
            bad = labels < 0 if self._num_classes is None else \
                (labels < 0) | (labels >= self._num_classes)
            if bad.any():
                top = "" if self._num_classes is None else f", {self._num_classes})"
                raise DataError(f"pairs_from_dataset: label {int(labels[bad][0])} is out of "
                                f"range [0{top or ', ∞)'}; labels must be class indices "
                                "0..num_classes-1")
            check_labels(labels, self._num_classes)
            self._loaded = (images, labels)
        return self._loaded

    def fingerprint(self) -> str:
        if self._given:
            return f"{self._given}|{self._settings()}"
        images, labels = self._load_examples()
        # Sorted per-example digests: the same examples in any order give the same key.
        digests = sorted(hashlib.sha256(str((int(y), x.shape)).encode() + x.tobytes()).digest()
                         for x, y in zip(images, labels))
        total = hashlib.sha256(b"".join(digests)).hexdigest()[:16]
        return f"data={total},n={len(labels)}|{self._settings()}"

    def load(self) -> Listing:
        images, labels = self._load_examples()
        num_classes = self._num_classes or int(labels.max()) + 1
        names = [str(c) for c in range(num_classes)]
        if self._class_names is not None and len(self._class_names) == num_classes:
            names = [str(c) for c in self._class_names]
        if len({x.shape for x in images}) == 1:
            split = SplitData(labels=labels, images=np.stack(images))
        else:  # different sizes: lossless PNGs, decoded as the imagefolder files are
            encoded = [tf.io.encode_png(x).numpy() for x in images]

            def reader(index):
                for i in index:
                    yield f"example {int(i)}", encoded[int(i)]

            split = SplitData(labels=labels, reader=reader)
        return Listing(class_names=names, splits={"train": split})


def pairs_from_dataset(ds, *, batch_size, seed, augment=None, cache_dir=None, fingerprint=None,
                       image_size=None, channels=None, num_classes=None,
                       views=("anchor", "partner"), max_examples=DEFAULT_MAX_EXAMPLES):
    """The CS-KD pair stream ``((anchor, partner), label)`` over a finite (image, label) dataset.

    Args:
      ds: a finite ``tf.data.Dataset`` of (image, label), batched or not; integer labels.
      batch_size: anchors per batch; seed: the stream's seed (same seed, same stream).
      augment: None (no augmentation), a name from :data:`cskd_tf.data.AUGMENTS`, or a
        function ``(image float32 [0, 1] (H, W, C), seed[2]) -> image`` of stateless ops.
      cache_dir: the shard cache root; None = $CSKD_CACHE_DIR or ~/.cache/cskd_tf.
      fingerprint: the cache key for this data (e.g. "flowers-v2"); None = a hash of the data.
      image_size: output size S (S×S); None = the images' own size (they must agree, and be
        square for a named augmentation).
      channels: output channels; None = the dataset's own (RGBA and unknown counts: 3).
      num_classes: labels must be < num_classes; None = max label + 1.
      views: ("anchor", "partner") for CS-KD; ("anchor",) yields plain (image, label).
      max_examples: a dataset of unknown size that yields more is refused.

    Returns:
      A ``tf.data.Dataset`` of ``((anchor, partner), label)`` float32 images in the input's
      value range and int32 labels, one epoch per iteration. Attributes: ``num_classes``,
      ``views``,
      ``class_names`` (``ds.class_names`` when the dataset has them, as
      ``image_dataset_from_directory``'s do, else "0", "1", ...), ``image_shape``,
      ``mean`` and ``std`` (per channel, in the output's units), ``pixel_max`` (255.0 or
      1.0: the output's value range, for ``CSKDModel(pixel_max=...)``),
      ``steps_per_epoch`` and ``cache_path``.
    """
    if not isinstance(ds, tf.data.Dataset):
        raise DataError(f"pairs_from_dataset needs a tf.data.Dataset, got {type(ds).__name__}; "
                        "use cskd_tf.data.pair_dataset for in-memory arrays")
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be >= 1 (got {batch_size})")
    if int(ds.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise DataError("pairs_from_dataset got an infinite dataset (repeat()?); pass a finite "
                        "one, e.g. ds.take(n) or the dataset without .repeat()")
    element = _Element(ds)
    # The dataset's own channel count, except that an alpha channel is dropped (RGBA -> RGB),
    # as the imagefolder source decodes; unknown counts become RGB, grey stays grey.
    own = element.channels if element.has_channels else 1
    channels = int(channels or (3 if own in (None, 4) else own))
    scale = _value_scale(ds, element)
    # image_dataset_from_directory's datasets carry their folder names as class_names.
    names = getattr(ds, "class_names", None)
    source = _DatasetSource(ds, element, scale, channels, fingerprint,
                            None if num_classes is None else int(num_classes), max_examples,
                            class_names=list(names) if names is not None else None)
    meta, splits = prepare_cache(source, cache_dir=cache_dir or "", val_fraction=0.0,
                                 seed=int(seed))
    split = splits["train"]
    native = meta.get("native_shape")
    transform = _transform(augment, image_size, native, channels)
    fetch = _memory_fetch(split)
    stream, steps = pairs.memory_pairs(
        fetch, split.counts, views=views, augment=transform, seed=int(seed), num_epochs=1,
        batch_size=int(batch_size), drop_remainder=False, reshuffle_each_iteration=True)
    if scale != 1.0:
        stream = stream.map(lambda x, y: (tf.nest.map_structure(lambda i: i * scale, x), y),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    stream = stream.apply(tf.data.experimental.assert_cardinality(steps))
    size = image_size or (native[0] if native else None)
    stream.num_classes = int(split.num_classes)
    stream.views = tuple(views)
    stream.class_names = list(meta["class_names"])
    stream.pixel_max = float(scale)
    stream.image_shape = (int(size), int(size if image_size else native[1]), channels) \
        if size else None
    stream.mean = tuple(float(m) * scale for m in meta["train_mean"])
    stream.std = tuple(max(float(s), 1e-3) * scale for s in meta["train_std"])
    stream.steps_per_epoch = int(steps)
    stream.cache_path = split.directory
    return stream


def _transform(augment, image_size, native, channels):
    """The per-view transform ``(image, seed) -> image`` for memory_pairs, or None."""
    if callable(augment):
        return augment
    if augment is not None and augment not in augment_lib.AUGMENTS:
        raise DataError(f"pairs_from_dataset: augment={augment!r} is not one of "
                        f"{', '.join(augment_lib.AUGMENTS)}, None or a function (image, seed)")
    if image_size is None:
        if native is None:
            raise DataError("pairs_from_dataset: the images differ in size; pass image_size=S "
                            "to resize them to S×S")
        if augment is None:
            return None  # one shape already: no transform at all
        if native[0] != native[1]:
            raise DataError(f"pairs_from_dataset: augment={augment!r} makes square images and "
                            f"these are {native[0]}x{native[1]}; pass image_size=S")
    size = int(image_size or native[0])
    return augment_lib.train_transform(augment or "none", size, int(channels))

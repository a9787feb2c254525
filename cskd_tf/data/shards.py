"""The per-class TFRecord shard cache: each split is written once, then reused.

Layout::

    <cache_dir>/<key>/meta.json
    <cache_dir>/<key>/<split>/class-00042.tfrecord   one file per class with examples

``<key>`` is ``<source>-<hash>``, the hash of (source name, resolved data_dir, the source's
fingerprint, max_classes, max_train_per_class, and — only when val is held out of train —
val_fraction and seed, plus FORMAT_VERSION), so a changed data set or split spec gets a
new cache and an unchanged one is never rewritten. The cache is written to a temporary
folder that is renamed into place when complete: an interrupted build leaves no half cache
(only a ``.tmp-*`` folder that can be deleted).

Each record is a tf.train.Example: ``image`` (the original encoded file bytes for file
sources, raw uint8 H*W*C bytes for array sources), ``label``, ``height``, ``width``,
``channels`` and ``format`` ("jpeg", "png", "gif", "bmp", "webp" or "raw"). Every encoded
image is decoded once while the cache is built, so a corrupt file is reported then, with
its path, and the train split's per-channel mean/std is computed on the way.

``meta.json``: class names, per-split per-class counts, kind ("raw"/"encoded"), raw shape,
fingerprint, spec, and the train mean/std in [0, 1] units.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from cskd_tf import images, progress
from cskd_tf.data.sources import Source, SplitData, select
from cskd_tf.errors import DataError
from cskd_tf.runs.files import make_folder

FORMAT_VERSION = 1
CHUNK = 512  # images decoded per tf.data batch when checking
READ_BUFFER = 256 * 1024

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "channels": tf.io.FixedLenFeature([], tf.int64),
    "format": tf.io.FixedLenFeature([], tf.string),
}


def cache_root(cache_dir: str = "") -> str:
    root = cache_dir or os.environ.get("CSKD_CACHE_DIR") or os.path.join("~", ".cache", "cskd_tf")
    return os.path.abspath(os.path.expanduser(root))


def cache_spec(source: Source, *, max_classes=0, max_train_per_class=0, val_fraction=0.1,
               seed=0) -> dict:
    held_out = not source.has_val() and val_fraction > 0
    return {
        "format_version": FORMAT_VERSION,
        "source": source.name,
        "data_dir": source.data_dir,
        "fingerprint": source.fingerprint(),
        "max_classes": int(max_classes),
        "max_train_per_class": int(max_train_per_class),
        # The held-out split is the only thing the seed and val_fraction change.
        "val_fraction": float(val_fraction) if held_out else None,
        "split_seed": int(seed) if held_out else None,
    }


def cache_key(spec: dict) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', spec['source'])}-{digest}"


@dataclass
class PreparedSplit:
    """One cached split: per-class TFRecord files, class-sorted, plus how to decode them."""

    name: str
    directory: str
    counts: np.ndarray  # examples per class (index = label)
    kind: str  # "encoded" or "raw"
    raw_shape: tuple | None  # (H, W, C) of raw records
    channels: int
    _memory: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def num_examples(self) -> int:
        return int(self.counts.sum())

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    def class_file(self, c: int) -> str:
        return os.path.join(self.directory, f"class-{c:05d}.tfrecord")

    def files(self) -> list:
        """Shard paths of the classes with examples, in class order."""
        return [self.class_file(c) for c in np.flatnonzero(self.counts)]

    def parse(self, serialized):
        """A serialized record -> (payload bytes, label int64)."""
        ex = tf.io.parse_single_example(serialized, FEATURES)
        return ex["image"], ex["label"]

    def decode(self, payload) -> tf.Tensor:
        """A payload -> uint8 image (H, W, C); grey JPEGs become C channels."""
        if self.kind == "raw":
            image = tf.reshape(tf.io.decode_raw(payload, tf.uint8), self.raw_shape)
        else:
            image = images.decode(payload, self.channels)
        return image

    def records(self) -> tf.data.Dataset:
        """(payload, label) in class order, then file order: deterministic."""
        return (tf.data.TFRecordDataset(self.files(), buffer_size=READ_BUFFER)
                .map(self.parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))

    def load(self):
        """All payloads and labels in memory (numpy object/int64 arrays), class-sorted."""
        if self._memory is None:
            payloads, labels = [], []
            batches = (tf.data.TFRecordDataset(self.files(), buffer_size=READ_BUFFER)
                       .batch(4096).map(lambda s: tf.io.parse_example(s, FEATURES)))
            for b in batches.as_numpy_iterator():
                payloads.append(b["image"])
                labels.append(b["label"])
            payloads = np.concatenate(payloads) if payloads else np.zeros([0], object)
            labels = np.concatenate(labels) if labels else np.zeros([0], np.int64)
            expected = np.repeat(np.arange(self.num_classes), self.counts)
            if len(labels) != len(expected) or (labels != expected).any():
                raise DataError(f"the shard cache {self.directory} does not match its "
                                f"meta.json; delete {os.path.dirname(self.directory)} and rerun")
            self._memory = (payloads, labels)
        return self._memory


def prepare_cache(source: Source, *, cache_dir="", max_classes=0, max_train_per_class=0,
                  val_fraction=0.1, seed=0):
    """Builds (once) or reuses the cache of ``source``; returns (meta dict, {split: PreparedSplit}).

    A ``prebuilt`` source (``shards``: a cache folder built earlier) is opened where it is
    and takes the defaults recorded in it; nothing is built and the split arguments are
    ignored (they were applied when it was built).
    """
    if source.prebuilt:
        meta, splits, defaults = open_cache(source.data_dir)
        source.adopt(defaults)
        return meta, splits
    spec = cache_spec(source, max_classes=max_classes, max_train_per_class=max_train_per_class,
                      val_fraction=val_fraction, seed=seed)
    key = cache_key(spec)
    root = cache_root(cache_dir)
    final = os.path.join(root, key)
    meta = _read_meta(final)
    if meta is None:
        listing = select(source.load(), dataset=source.name, max_classes=max_classes,
                         val_fraction=val_fraction, seed=seed,
                         max_train_per_class=max_train_per_class)
        make_folder(root, what="the shard cache folder", error_type=DataError,
                    fix="set --config.cache_dir (or $CSKD_CACHE_DIR) to a folder you can write")
        _remove_stale(root, key)
        tmp = os.path.join(root, f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            total = sum(len(data) for data in listing.splits.values())
            progress.say(f"building the shard cache {final} ({total} images, once)")
            meta = _build(tmp, key, spec, source, listing)
            try:
                os.rename(tmp, final)
            except OSError:
                # Another process finished the same cache first: use that one.
                if _read_meta(final) is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta = _read_meta(final)
    return meta, _splits(final, meta)


def _splits(folder: str, meta: dict) -> dict:
    return {name: PreparedSplit(name=name, directory=os.path.join(folder, name),
                                counts=np.asarray(s["counts"], np.int64), kind=s["kind"],
                                raw_shape=tuple(s["raw_shape"]) if s["raw_shape"] else None,
                                channels=meta["channels"])
            for name, s in meta["splits"].items()}


@dataclass
class CacheDefaults:
    """A pre-built cache's stand-in for its Source: the defaults prepare() takes from it."""

    default_image_size: int
    default_augment: str
    mean: tuple | None
    std: tuple | None


def open_cache(folder: str):
    """A cache folder built earlier (``<cache_dir>/<key>``) without its source.

    ``folder`` may be on any filesystem tf.io.gfile reads (local, NFS, gs://, ...); it is
    only read. Returns (meta dict, {split: PreparedSplit}, CacheDefaults).
    """
    meta = _read_meta(folder)
    if meta is None:
        raise DataError(f"{folder} holds no shard cache (no meta.json of format "
                        f"{FORMAT_VERSION}); build one with cskd-build-cache "
                        f"and set --config.data_dir to the folder it prints")
    saved = meta.get("source_defaults") or {}
    native = meta.get("native_shape")
    # Caches built before source_defaults was recorded: the native size, else 224 px.
    size = int(saved.get("image_size") or (native[0] if native else 224))
    defaults = CacheDefaults(
        default_image_size=size,
        default_augment=saved.get("augment") or ("cifar" if size <= 64 else "finegrained"),
        mean=tuple(saved["mean"]) if saved.get("mean") else None,
        std=tuple(saved["std"]) if saved.get("std") else None)
    return meta, _splits(folder, meta), defaults


def _remove_stale(root: str, key: str):
    """Deletes temporary folders of this key left by builds whose process is gone."""
    for name in os.listdir(root):
        match = re.fullmatch(rf"\.tmp-{re.escape(key)}-(\d+)-[0-9a-f]+", name)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except OSError:
            pass  # alive, owned by someone else


def _read_meta(folder: str):
    try:
        # tf.io.gfile: a pre-built cache may live on a remote filesystem (open_cache).
        with tf.io.gfile.GFile(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError, tf.errors.OpError):
        return None
    return meta if meta.get("format_version") == FORMAT_VERSION else None


def _build(tmp, key, spec, source, listing) -> dict:
    os.makedirs(tmp)
    meta = {"format_version": FORMAT_VERSION, "key": key, "spec": spec,
            "source": source.name, "class_names": list(listing.class_names),
            "channels": int(source.channels), "splits": {},
            # What prepare() takes from the source, for reading the cache without it.
            "source_defaults": {"image_size": int(source.default_image_size),
                                "augment": source.default_augment,
                                "mean": list(source.mean) if source.mean else None,
                                "std": list(source.std) if source.std else None}}
    for name, data in listing.splits.items():
        with progress.Progress(f"shard cache, {name} split", total=len(data)) as bar:
            info, stats = _write_split(os.path.join(tmp, name), data, len(listing.class_names),
                                       source.channels, bar)
        meta["splits"][name] = info
        if name == "train":
            meta.update(stats)
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def _format(data: bytes) -> str:
    for magic, name in ((b"\xff\xd8", "jpeg"), (b"\x89PNG", "png"), (b"GIF8", "gif"),
                        (b"BM", "bmp"), (b"RIFF", "webp")):
        if data.startswith(magic):
            return name
    return "unknown"


def _example(payload: bytes, label: int, shape, fmt: str) -> bytes:
    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    def raw(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image": raw(payload), "label": ints(label), "height": ints(shape[0]),
        "width": ints(shape[1]), "channels": ints(shape[2]), "format": raw(fmt.encode()),
    })).SerializeToString()


def _write_split(folder, data: SplitData, num_classes: int, channels: int, bar=None):
    """Writes one split's class files; returns (meta entry, {"mean", "std", "native_shape"})."""
    os.makedirs(folder)
    _allow_open_files(num_classes + 256)  # one open writer per class
    writers = {}
    counts = np.zeros(num_classes, np.int64)
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    pixels = 0
    shapes, formats = set(), set()
    try:
        items = data.items()
        while True:
            chunk = [item for _, item in zip(range(CHUNK), items)]
            if not chunk:
                break
            names, labels, payloads = zip(*chunk)
            if data.kind == "raw":
                arr = np.stack(payloads)
                arr = arr[..., None] if arr.ndim == 3 else arr
                if arr.dtype != np.uint8 or arr.shape[-1] != channels:
                    raise DataError(f"{names[0]}: expected uint8 images with {channels} "
                                    f"channel(s), got {arr.dtype} {arr.shape[1:]}; fix the source")
                f = arr.astype(np.float64) / 255.0
                total += f.sum(axis=(0, 1, 2))
                total_sq += (f * f).sum(axis=(0, 1, 2))
                pixels += arr.shape[0] * arr.shape[1] * arr.shape[2]
                chunk_shapes = [arr.shape[1:]] * len(arr)
                records = [(arr[i].tobytes(), "raw") for i in range(len(arr))]
            else:
                dims, sums, sqs = _decode_check(names, payloads, channels)
                total += sums.sum(axis=0)
                total_sq += sqs.sum(axis=0)
                pixels += int(np.prod(dims, axis=1).sum())
                chunk_shapes = [(int(h), int(w), channels) for h, w in dims]
                records = [(p, _format(p)) for p in payloads]
            for label, shape, (payload, fmt) in zip(labels, chunk_shapes, records):
                if label not in writers:
                    writers[label] = tf.io.TFRecordWriter(
                        os.path.join(folder, f"class-{label:05d}.tfrecord"))
                writers[label].write(_example(payload, label, shape, fmt))
                counts[label] += 1
                shapes.add(tuple(shape))
                formats.add(fmt)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        for w in writers.values():
            w.close()
    mean = total / max(pixels, 1)
    std = np.sqrt(np.maximum(total_sq / max(pixels, 1) - mean * mean, 0.0))
    native = list(next(iter(shapes))) if len(shapes) == 1 else None
    info = {"counts": counts.tolist(), "num_examples": int(counts.sum()), "kind": data.kind,
            "formats": sorted(formats),
            "raw_shape": native if data.kind == "raw" else None, "native_shape": native}
    return info, {"train_mean": mean.tolist(), "train_std": std.tolist(), "native_shape": native}


def _allow_open_files(n: int):
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < n:
            new = n if hard == resource.RLIM_INFINITY else min(n, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ImportError, ValueError, OSError):
        pass


def _decode_check(names, payloads, channels):
    """Decodes a chunk in parallel: (H, W) per image and per-channel sums; DataError on failure."""
    def stats(payload):
        image = images.decode(payload, channels)
        f = tf.cast(image, tf.float32) / 255.0
        return tf.shape(image)[:2], tf.reduce_sum(f, [0, 1]), tf.reduce_sum(f * f, [0, 1])

    ds = (tf.data.Dataset.from_tensor_slices(list(payloads))
          .map(stats, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    out = []
    try:
        for r in ds.as_numpy_iterator():
            out.append(r)
    except tf.errors.OpError:
        # A deterministic map reports the failure at its position; confirm it eagerly.
        for i in range(len(out), len(payloads)):
            try:
                tf.io.decode_image(payloads[i], channels=channels, expand_animations=False)
            except tf.errors.OpError as e:
                reason = " ".join(e.message.split()).split("[Op:")[0].strip().rstrip(".")
                raise DataError(f"cannot decode image {names[i]} ({reason}); replace or delete "
                                f"the file") from None
        raise
    dims = np.array([r[0] for r in out], np.int64).reshape(-1, 2)
    return (dims, np.array([r[1] for r in out], np.float64).reshape(-1, channels),
            np.array([r[2] for r in out], np.float64).reshape(-1, channels))

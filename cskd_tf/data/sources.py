"""Data sources: where the examples of a dataset are and how to list them.

A source is a small class, one per on-disk layout (like a tensorflow_datasets builder).
``load()`` lists every split as a :class:`SplitData` — either in-memory uint8 arrays or
encoded image files — plus the class names; ``fingerprint()`` is a cheap summary of the
data on disk (file count, total size, latest mtime; an array hash for bundled data) that
goes into the cache key, so changed data means a new cache.

Split rules applied to every source (:func:`select`), in this order:

1. ``max_classes=N`` keeps classes 0..N-1 (by class index) in every split;
2. a source with no validation split gets one held out of train: ``val_fraction`` of each
   class, chosen by a generator seeded with (``seed``, class), so it is stratified and
   deterministic; model selection uses it and never looks at test (under
   ``config.protocol="paper"`` nothing is held out: see ``pipeline.apply_protocol``);
3. ``max_train_per_class=N`` keeps the first N training examples of each class in the
   source's own (sorted) order;
4. checks: no empty split, every class has a training example, labels in range.

Registry (``config.dataset``): digits, fashion_mnist, tinyimagenet, imagefolder, mit67,
and ``tfds:<builder name>``.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from cskd_tf.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SplitData:
    """The examples of one split, in the source's order.

    Exactly one of ``images`` (uint8 (N, H, W, C)), ``paths`` (encoded JPEG/PNG files) or
    ``reader`` (a function that yields (name, encoded bytes) for ascending source indices;
    used by sources that stream, such as TFDS) is set. ``index`` maps rows to source indices.
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list | None = None
    reader: Callable[[np.ndarray], Iterator[tuple[str, bytes]]] | None = None
    index: np.ndarray | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.index is None:
            self.index = np.arange(len(self.labels), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def kind(self) -> str:
        return "raw" if self.images is not None else "encoded"

    def take(self, rows) -> "SplitData":
        """The subset at ``rows``, kept in ascending source order."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        return SplitData(
            labels=self.labels[rows],
            images=None if self.images is None else self.images[rows],
            paths=None if self.paths is None else [self.paths[i] for i in rows],
            reader=self.reader, index=self.index[rows])

    def items(self) -> Iterator[tuple[str, int, object]]:
        """Yields (name for messages, label, payload): payload is bytes or a uint8 array."""
        if self.images is not None:
            for i in range(len(self)):
                yield f"example {int(self.index[i])}", int(self.labels[i]), self.images[i]
        elif self.paths is not None:
            for path, label in zip(self.paths, self.labels):
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError as e:
                    raise DataError(f"cannot read image {path}: {e.strerror}; "
                                    f"check the file's permissions or remove it") from None
                yield path, int(label), data
        else:
            for (name, data), label in zip(self.reader(self.index), self.labels):
                yield name, int(label), data


@dataclass
class Listing:
    class_names: list
    splits: dict = field(default_factory=dict)  # split name -> SplitData


class Source:
    """Base class. Subclasses set the class attributes and implement load/fingerprint."""

    name = ""
    channels = 3
    default_image_size = 224
    default_augment = "finegrained"
    mean: tuple | None = None  # published per-channel mean in [0, 1]; None = from train
    std: tuple | None = None
    default_data_dir = ""
    layout = ""  # one line for error messages

    def __init__(self, data_dir: str = ""):
        data_dir = data_dir or self.default_data_dir
        self.data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else ""

    def require_dir(self) -> str:
        if not self.data_dir:
            raise ConfigError(f"dataset {self.name!r} needs config.data_dir; set "
                              f"--config.data_dir to the folder holding {self.layout}")
        if not os.path.isdir(self.data_dir):
            raise DataError(f"data directory {self.data_dir} does not exist; set "
                            f"--config.data_dir to the folder holding {self.layout}")
        return self.data_dir

    def load(self) -> Listing:
        raise NotImplementedError

    def has_val(self) -> bool:
        """Whether load() lists its own "val" split (else it is held out of train)."""
        return False

    required: tuple = ()  # paths under data_dir that the layout must have

    def fingerprint(self) -> str:
        root = self.require_dir()
        # Check the layout before walking the tree: a wrong data_dir (say, a home folder)
        # should fail at once, not after statting every file under it.
        for rel in self.required:
            if not os.path.exists(os.path.join(root, rel)):
                raise DataError(f"{os.path.join(root, rel)} not found; config.data_dir must be "
                                f"the folder holding {self.layout}")
        return tree_fingerprint(root)


def tree_fingerprint(root: str) -> str:
    """File count, total size and latest mtime under ``root``: changes when files do."""
    count = size = 0
    latest = 0.0
    for dirpath, _, files in os.walk(root):
        latest = max(latest, os.stat(dirpath).st_mtime)
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            count, size, latest = count + 1, size + st.st_size, max(latest, st.st_mtime)
    return f"files={count},bytes={size},mtime={latest:.3f}"


def array_fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- in-memory


class DigitsSource(Source):
    """scikit-learn's bundled digits: 1,797 8x8 greyscale images, 10 classes.

    Pixel values 0..16 become uint8 by ``round(v * 255 / 16)``. The split is a fixed
    stratified 60/20/20 train/val/test split (seed 0, independent of ``config.seed``), so
    the test set never changes between runs.
    """

    name = "digits"
    channels = 1
    default_image_size = 8
    default_augment = "digits"

    def _arrays(self):
        from sklearn.datasets import load_digits
        d = load_digits()
        images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
        return images, d.target.astype(np.int64)

    def fingerprint(self) -> str:
        return array_fingerprint(*self._arrays())

    def has_val(self) -> bool:
        return True

    def load(self) -> Listing:
        from sklearn.model_selection import train_test_split
        images, labels = self._arrays()
        rows = np.arange(len(labels))
        train, rest = train_test_split(rows, test_size=0.4, stratify=labels, random_state=0)
        val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest],
                                     random_state=0)
        full = SplitData(labels=labels, images=images)
        return Listing(class_names=[str(i) for i in range(10)],
                       splits={"train": full.take(train), "val": full.take(val),
                               "test": full.take(test)})


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: str) -> np.ndarray:
    """Parses an IDX file (optionally gzipped): magic 0x0000 08 <ndim>, big-endian dims."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path} ({e}); re-download or reinstall it") \
            from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number); "
                        f"re-download or reinstall it")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(data) != start + int(np.prod(dims)):
        raise DataError(f"{path} is truncated or corrupt: header says {dims} but the file has "
                        f"{len(data) - start} data bytes; re-download or reinstall it")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims)


class FashionMNISTSource(Source):
    """Fashion-MNIST IDX files: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Default folder: /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist).
    Train 60,000 / test 10,000 28x28 greyscale; val is held out of train.
    """

    name = "fashion_mnist"
    channels = 1
    default_image_size = 28
    default_augment = "cifar"
    default_data_dir = "/usr/share/datasets/fashion-mnist"
    layout = ("train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-... "
              "(apt-get install dataset-fashion-mnist)")

    def _file(self, stem: str) -> str:
        root = self.require_dir()
        for name in (stem, stem + ".gz"):
            if os.path.isfile(os.path.join(root, name)):
                return os.path.join(root, name)
        raise DataError(f"{os.path.join(root, stem)}[.gz] not found; set --config.data_dir to "
                        f"the folder holding {self.layout}")

    STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")

    def fingerprint(self) -> str:
        stats = [os.stat(self._file(stem)) for stem in self.STEMS]
        return ";".join(f"{st.st_size}@{st.st_mtime:.3f}" for st in stats)

    def load(self) -> Listing:
        splits = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = read_idx(self._file(f"{prefix}-images-idx3-ubyte"))
            labels = read_idx(self._file(f"{prefix}-labels-idx1-ubyte"))
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(f"Fashion-MNIST {split} files disagree: images {images.shape}, "
                                f"labels {labels.shape}; re-download or reinstall them")
            splits[split] = SplitData(labels=labels.astype(np.int64), images=images[..., None])
        return Listing(class_names=list(FASHION_CLASSES), splits=splits)


# --------------------------------------------------------------------------- registry


def _registry():
    from cskd_tf.data import folders
    return {
        "digits": DigitsSource,
        "fashion_mnist": FashionMNISTSource,
        "tinyimagenet": folders.TinyImageNetSource,
        "imagefolder": folders.ImageFolderSource,
        "mit67": folders.MIT67Source,
    }


def source_names() -> list:
    return sorted(_registry()) + ["tfds:<name>"]


def get_source(dataset: str, data_dir: str = "") -> Source:
    """The source for ``config.dataset``; ConfigError for an unknown name."""
    if dataset.startswith("tfds:"):
        from cskd_tf.data.tfds_source import TFDSSource
        return TFDSSource(dataset[len("tfds:"):], data_dir)
    registry = _registry()
    if dataset not in registry:
        close = difflib.get_close_matches(dataset, list(registry), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown dataset {dataset!r}; {hint}set --config.dataset to one of "
                          f"{', '.join(source_names())}")
    return registry[dataset](data_dir)


# --------------------------------------------------------------------------- split rules


def select(listing: Listing, *, dataset: str, max_classes: int, val_fraction: float,
           seed: int, max_train_per_class: int) -> Listing:
    """Applies the split rules of the module docstring; raises DataError on bad data."""
    names = list(listing.class_names)
    splits = dict(listing.splits)
    if "train" not in splits:
        raise DataError(f"dataset {dataset!r} has no training split; check config.data_dir")
    for split, data in splits.items():
        bad = (data.labels < 0) | (data.labels >= len(names))
        if bad.any():
            raise DataError(f"{dataset} {split} split has labels out of range [0, {len(names)}) "
                            f"(e.g. {int(data.labels[bad][0])}); fix the label files")
    if max_classes and max_classes < len(names):
        names = names[:max_classes]
        splits = {k: v.take(np.flatnonzero(v.labels < max_classes)) for k, v in splits.items()}
    train = splits["train"]
    if "val" not in splits and val_fraction > 0:
        keep, held = [], []
        for c in range(len(names)):
            rows = np.flatnonzero(train.labels == c)
            # At least one per class (when the class has two) so val covers every class.
            n_val = max(0, min(max(int(round(val_fraction * len(rows))), 1), len(rows) - 1))
            perm = np.random.default_rng([int(seed) & 0xFFFFFFFF, c]).permutation(len(rows))
            held.append(rows[perm[:n_val]])
            keep.append(rows[perm[n_val:]])
        splits["val"] = train.take(np.concatenate(held))
        train = train.take(np.concatenate(keep))
    if max_train_per_class:
        rows = [np.flatnonzero(train.labels == c)[:max_train_per_class] for c in range(len(names))]
        train = train.take(np.concatenate(rows))
    splits["train"] = train
    counts = np.bincount(train.labels, minlength=len(names))
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise DataError(f"{dataset}: class {c} ({names[c]!r}) has no training example; add "
                        f"images for it or lower config.max_classes")
    for split, data in splits.items():
        if len(data) == 0:
            raise DataError(f"{dataset}: the {split} split is empty; add examples to it or "
                            f"remove it (val is then held out of train by config.val_fraction)")
    order = ["train", "val", "test"] + sorted(set(splits) - {"train", "val", "test"})
    return Listing(class_names=names, splits={k: splits[k] for k in order if k in splits})

"""What a data source is, and the registry that maps ``config.dataset`` to one.

A source is a small class, one per on-disk layout (like a tensorflow_datasets builder).
``load()`` lists every split as a :class:`SplitData` — either in-memory uint8 arrays or
encoded image files — plus the class names; ``fingerprint()`` is a cheap summary of the
data on disk (file count, total size, latest mtime; an array hash for bundled data) that
goes into the cache key, so changed data means a new cache. The split rules applied to
every listing are in :mod:`cskd_tf.data.sources.splits`.

Adding a source: one module in this package with a :class:`Source` subclass decorated
``@register_source("name", display_name="Title")`` (a name ending in ``:`` registers a
family: ``tfds:`` makes ``tfds:<spec>`` call ``TFDSSource(spec, data_dir)``); importing the
package imports every module of it, so nothing else changes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from cskd_tf.errors import ConfigError, DataError
from cskd_tf.registry import SOURCES

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
    # True for a cache built earlier (cskd_tf.data.sources.cache): read as it is, never
    # listed, split or rebuilt.
    prebuilt = False

    def __init__(self, data_dir: str = ""):
        data_dir = data_dir or self.default_data_dir
        self.data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else ""

    def require_dir(self) -> str:
        if not self.data_dir:
            raise ConfigError(f"dataset {self.name!r} needs config.data_dir; set "
                              f"--config.data_dir to the folder holding {self.layout}")
        if os.path.exists(self.data_dir) and not os.path.isdir(self.data_dir):
            raise DataError(f"config.data_dir {self.data_dir} is a file, not a directory; set "
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


# --------------------------------------------------------------------------- registry

def register_source(name, display_name=None):
    """Class decorator registering a :class:`Source` in :data:`cskd_tf.registry.SOURCES`:
    ``config.dataset = name`` selects the class.

    ``name`` ending in ``:`` registers a family (``"tfds:"``): ``"tfds:cifar100"`` then makes
    ``cls("cifar100", data_dir)``; any other name makes ``cls(data_dir)``. ``display_name``
    is the report's column title (default ``name``). The entry's ``defaults`` are the
    class's image size, augmentation and channels.
    """
    def wrap(cls):
        defaults = {"image_size": cls.default_image_size, "augment": cls.default_augment,
                    "channels": cls.channels}
        SOURCES.add(name, cls, display_name=display_name, defaults=defaults)
        return cls
    return wrap


def source_names() -> list:
    """The values ``config.dataset`` accepts, for messages and ``--help`` texts."""
    return SOURCES.choices()


def get_source(dataset: str, data_dir: str = "") -> Source:
    """The source for ``config.dataset``; ConfigError (with a "did you mean") if unknown."""
    entry = SOURCES.get(dataset)
    if entry.family:
        return entry.obj(dataset[len(entry.name):], data_dir)
    return entry.obj(data_dir)

"""Sources held as uint8 arrays: scikit-learn's digits and Fashion-MNIST's IDX files."""

from __future__ import annotations

import gzip
import os

import numpy as np

from cskd_tf.data.sources.base import (Listing, Source, SplitData, array_fingerprint,
                                       register_source)
from cskd_tf.errors import DataError


@register_source("digits", display_name="Digits")
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


@register_source("fashion_mnist", display_name="Fashion-MNIST")
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

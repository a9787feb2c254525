"""Sources read from folders of encoded images (JPEG/PNG): TinyImageNet, ImageFolder, MIT-67.

Images are listed, not decoded, here; the shard cache decodes each one once to reject
corrupt files. File names are sorted so listings (and so the held-out split and the
``max_train_per_class`` cap) are the same on every machine.
"""

from __future__ import annotations

import os

import numpy as np

from cskd_tf.data.sources.base import (IMAGENET_MEAN, IMAGENET_STD, Listing, Source, SplitData,
                                       register_source)
from cskd_tf.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(folder: str) -> list:
    """Sorted image files (.jpg/.jpeg/.png, any case) directly in ``folder``; [] if absent."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, n)))


def _read_lines(path: str, what: str) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path} not found; config.data_dir must be the folder holding "
                        f"{what}") from None


def _split(paths, labels) -> SplitData:
    return SplitData(labels=np.asarray(labels, np.int64), paths=list(paths))


@register_source("tinyimagenet", display_name="TinyImageNet")
class TinyImageNetSource(Source):
    """TinyImageNet-200 in its official layout::

        <data_dir>/wnids.txt                   one WordNet id per line (the classes)
        <data_dir>/words.txt                   "<wnid>\\t<synonym>, <synonym>, ..." (optional)
        <data_dir>/train/<wnid>/images/*.JPEG  training images, 64x64
        <data_dir>/val/images/*.JPEG           validation images
        <data_dir>/val/val_annotations.txt     "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>"
        <data_dir>/test/images/*.JPEG          unlabelled: not used

    Classes are the sorted wnids (the torchvision ImageFolder order the reference code
    used); a class's name is the first synonym in words.txt. Some images are greyscale;
    they are decoded to 3 channels.
    """

    name = "tinyimagenet"
    channels = 3
    default_image_size = 32
    default_augment = "tinyimagenet"
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    layout = "wnids.txt, words.txt, train/<wnid>/images/ and val/ of TinyImageNet-200"
    required = ("wnids.txt", "train")

    def has_val(self) -> bool:
        return os.path.isfile(os.path.join(self.require_dir(), "val", "val_annotations.txt"))

    def load(self) -> Listing:
        root = self.require_dir()
        wnids = sorted({line.strip() for line in _read_lines(os.path.join(root, "wnids.txt"),
                                                                 self.layout)})
        words = {}
        if os.path.isfile(os.path.join(root, "words.txt")):
            for line in _read_lines(os.path.join(root, "words.txt"), self.layout):
                wnid, _, text = line.partition("\t")
                words[wnid.strip()] = text.split(",")[0].strip() or wnid.strip()
        names = [words.get(w, w) for w in wnids]
        index = {w: i for i, w in enumerate(wnids)}
        if not os.path.isdir(os.path.join(root, "train")):
            raise DataError(f"{os.path.join(root, 'train')} does not exist; config.data_dir "
                            f"must be the folder holding {self.layout}")
        paths, labels = [], []
        for i, wnid in enumerate(wnids):
            files = list_images(os.path.join(root, "train", wnid, "images"))
            paths += files
            labels += [i] * len(files)
        splits = {"train": _split(paths, labels)}
        annotations = os.path.join(root, "val", "val_annotations.txt")
        if os.path.isfile(annotations):
            paths, labels = [], []
            for n, line in enumerate(_read_lines(annotations, self.layout), 1):
                parts = line.split("\t")
                if len(parts) < 2:
                    raise DataError(f"{annotations} line {n} is not '<file>\\t<wnid>...'; "
                                    f"fix or regenerate the file")
                if parts[1] not in index:
                    raise DataError(f"{annotations} line {n}: wnid {parts[1]!r} is not in "
                                    f"wnids.txt (label out of range); fix the annotation")
                path = os.path.join(root, "val", "images", parts[0])
                if not os.path.isfile(path):
                    raise DataError(f"{path} (listed in {annotations} line {n}) does not "
                                    f"exist; restore the file or remove the line")
                paths.append(path)
                labels.append(index[parts[1]])
            order = np.argsort(paths, kind="stable")
            splits["val"] = _split([paths[i] for i in order], [labels[i] for i in order])
        return Listing(class_names=names, splits=splits)


@register_source("imagefolder", display_name="Image folder")
class ImageFolderSource(Source):
    """A generic tree of class folders::

        <data_dir>/train/<class>/*.jpg|*.jpeg|*.png   (extensions in any case)
        <data_dir>/val/<class>/...                    optional; else held out of train
        <data_dir>/test/<class>/...                   optional

    Classes are the sorted names of the train class folders; a val/test class folder
    that train lacks is an error (its label would be out of range).
    """

    name = "imagefolder"
    channels = 3
    default_image_size = 224
    default_augment = "finegrained"
    layout = "train/<class>/*.jpg (and optional val/, test/)"
    required = ("train",)

    def has_val(self) -> bool:
        return os.path.isdir(os.path.join(self.require_dir(), "val"))

    def load(self) -> Listing:
        root = self.require_dir()
        train_dir = os.path.join(root, "train")
        if not os.path.isdir(train_dir):
            raise DataError(f"{train_dir} does not exist; config.data_dir must be the folder "
                            f"holding {self.layout}")
        classes = sorted(n for n in os.listdir(train_dir)
                         if os.path.isdir(os.path.join(train_dir, n)))
        if not classes:
            raise DataError(f"{train_dir} has no class folders; put each class's images in "
                            f"train/<class>/")
        index = {c: i for i, c in enumerate(classes)}
        splits = {}
        for split in ("train", "val", "test"):
            folder = os.path.join(root, split)
            if not os.path.isdir(folder):
                continue
            paths, labels = [], []
            for cls in sorted(os.listdir(folder)):
                if not os.path.isdir(os.path.join(folder, cls)):
                    continue
                if cls not in index:
                    raise DataError(f"{os.path.join(folder, cls)} is not a class of {train_dir} "
                                    f"(label out of range); add train/{cls}/ or remove it")
                files = list_images(os.path.join(folder, cls))
                paths += files
                labels += [index[cls]] * len(files)
            splits[split] = _split(paths, labels)
        return Listing(class_names=classes, splits=splits)


@register_source("mit67", display_name="MIT67")
class MIT67Source(Source):
    """MIT Indoor-67 in its official layout::

        <data_dir>/Images/<class>/*.jpg
        <data_dir>/TrainImages.txt     "<class>/<file>.jpg" per line (80 per class)
        <data_dir>/TestImages.txt      the same (20 per class)

    Classes are the sorted class names of TrainImages.txt; val is held out of train.
    A few official files are GIFs or greyscale despite the .jpg name; they decode fine.
    """

    name = "mit67"
    channels = 3
    default_image_size = 224
    default_augment = "finegrained"
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    layout = "Images/<class>/*.jpg, TrainImages.txt and TestImages.txt of MIT Indoor-67"
    required = ("Images", "TrainImages.txt", "TestImages.txt")

    def load(self) -> Listing:
        root = self.require_dir()
        lists = {split: _read_lines(os.path.join(root, f"{stem}Images.txt"), self.layout)
                 for split, stem in (("train", "Train"), ("test", "Test"))}
        classes = sorted({line.strip().split("/")[0] for line in lists["train"]})
        index = {c: i for i, c in enumerate(classes)}
        splits = {}
        for split, lines in lists.items():
            paths, labels = [], []
            for n, line in enumerate(lines, 1):
                rel = line.strip()
                cls = rel.split("/")[0]
                if cls not in index:
                    raise DataError(f"{split.capitalize()}Images.txt line {n}: class {cls!r} is "
                                    f"not in TrainImages.txt (label out of range); fix the list")
                path = os.path.join(root, "Images", *rel.split("/"))
                if not os.path.isfile(path):
                    raise DataError(f"{path} (listed in {split.capitalize()}Images.txt line {n}) "
                                    f"does not exist; restore the file or remove the line")
                paths.append(path)
                labels.append(index[cls])
            splits[split] = _split(paths, labels)
        return Listing(class_names=classes, splits=splits)

"""``tfds:<name>``: any tensorflow_datasets builder with an ``image`` and a ``label`` feature.

``config.dataset = "tfds:cifar100"`` (also ``tfds:caltech_birds2011``, ``tfds:stanford_dogs``,
``tfds:imagenet2012``, or ``tfds:<name>/<config>:<version>``). The builder reads and writes
``config.data_dir`` (empty = TFDS's default, ~/tensorflow_datasets). When the data is not
prepared there it is downloaded and prepared once (needs internet; for datasets with manual
downloads such as imagenet2012, put the archives in ``<data_dir>/downloads/manual`` as the
TFDS catalog says). Images are copied into the shard cache still encoded (no re-encode).

Split mapping: ``train`` -> train, ``validation`` -> val, ``test`` -> test; a split whose
labels are all -1 (unlabelled, e.g. imagenet2012 test) is dropped. A source without a
validation split gets one held out of train.
"""

from __future__ import annotations

import numpy as np

from cskd_tf.data.sources.base import (IMAGENET_MEAN, IMAGENET_STD, Listing, Source, SplitData,
                                       register_source)
from cskd_tf.errors import ConfigError, DataError

CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
SPLITS = (("train", "train"), ("validation", "val"), ("test", "test"))


def parse_name(spec: str) -> str:
    """'cifar100' / 'cifar100:3.0.2' / 'name/config' -> the TFDS builder spec; checks syntax."""
    spec = spec.strip()
    base = spec.split(":")[0].split("/")[0]
    if not base or not base.replace("_", "").isalnum() or spec.count(":") > 1:
        raise ConfigError(f"config.dataset='tfds:{spec}' is not a TFDS builder name; use "
                          f"tfds:<name>[/<config>][:<version>], e.g. tfds:cifar100")
    return spec


@register_source("tfds:", display_name="TFDS")
class TFDSSource(Source):
    name = "tfds"
    layout = "a TFDS data_dir (prepared data or room to download it)"

    def __init__(self, spec: str, data_dir: str = ""):
        super().__init__(data_dir)
        import tensorflow_datasets as tfds

        self.spec = parse_name(spec)
        self.name = f"tfds:{self.spec}"
        try:
            self.builder = tfds.builder(self.spec, data_dir=self.data_dir or None)
        except tfds.core.registered.DatasetNotFoundError:
            raise ConfigError(f"TFDS has no dataset {self.spec!r}; set --config.dataset to "
                              f"tfds:<name> with a name from the TFDS catalog") from None
        # A bad version or config string raises whatever TFDS's parser picks (ValueError,
        # AssertionError, its own errors): caught whole and re-raised as one ConfigError.
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"cannot load TFDS builder {self.spec!r} "
                              f"({_one_line(e)}); check the name, config and version") from None
        features = self.builder.info.features
        if "image" not in features or "label" not in features:
            raise ConfigError(f"TFDS dataset {self.spec!r} has no 'image' and 'label' features; "
                              f"pick an image classification dataset")
        shape = features["image"].shape
        self.channels = int(shape[-1] or 3)
        base = self.builder.info.name
        small = shape[0] is not None and shape[0] <= 64
        self.default_image_size = int(shape[0]) if small else 224
        self.default_augment = "cifar" if small else "finegrained"
        if base in CIFAR_STATS:
            self.mean, self.std = CIFAR_STATS[base]
        elif not small and self.channels == 3:
            self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def fingerprint(self) -> str:
        return f"{self.builder.info.full_name}@{self.builder.data_dir}"

    def has_val(self) -> bool:
        self._ensure_prepared()
        return "validation" in self.builder.info.splits

    def _ensure_prepared(self):
        if self.builder.is_prepared():
            return
        try:
            # TFDS's default manual_dir is <data_dir>/downloads/manual.
            self.builder.download_and_prepare()
        # Each dataset's download/prepare code can fail in its own way (network, checksums,
        # missing manual files, Beam): caught whole and re-raised as one DataError.
        except Exception as e:  # noqa: BLE001
            raise DataError(
                f"TFDS dataset {self.spec!r} is not prepared in {self.builder.data_dir} and "
                f"preparing it failed ({_one_line(e)}); run once with internet access, or "
                f"prepare a data_dir elsewhere (manual downloads: <data_dir>/downloads/manual, "
                f"see the TFDS catalog) and set --config.data_dir to it") from None

    def load(self) -> Listing:
        import tensorflow as tf
        import tensorflow_datasets as tfds

        self._ensure_prepared()
        label_feature = self.builder.info.features["label"]
        names = list(label_feature.names)
        splits = {}
        for tfds_split, split in SPLITS:
            if tfds_split not in self.builder.info.splits:
                continue
            ds = self.builder.as_dataset(split=tfds_split, shuffle_files=False,
                                         decoders={"image": tfds.decode.SkipDecoding()})
            labels = np.concatenate([b for b in ds.map(lambda e: e["label"]).batch(4096)
                                     .as_numpy_iterator()] or [np.zeros([0], np.int64)])
            if len(labels) and (labels == -1).all():
                continue  # unlabelled split

            def reader(index, tfds_split=tfds_split):
                wanted = set(int(i) for i in index)
                source = self.builder.as_dataset(split=tfds_split, shuffle_files=False,
                                                 decoders={"image": tfds.decode.SkipDecoding()})
                source = source.map(lambda e: e["image"], num_parallel_calls=tf.data.AUTOTUNE)
                for i, data in enumerate(source.as_numpy_iterator()):
                    if i in wanted:
                        yield f"{self.spec} {tfds_split}[{i}]", data

            splits[split] = SplitData(labels=labels, reader=reader)
        return Listing(class_names=names, splits=splits)


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "")

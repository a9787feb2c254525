"""``shards``: a per-class TFRecord shard cache built earlier, read where it is.

``config.dataset = "shards"`` with ``config.data_dir`` = the folder ``cskd-build-cache``
printed (``<cache_dir>/<key>``, holding ``meta.json``; any filesystem tf.io.gfile reads:
local, NFS, ``gs://``). The split rules were applied when the cache was built, so
``max_classes``, ``max_train_per_class``, ``val_fraction`` and the seed are ignored here.

The folder is opened by :func:`cskd_tf.data.shards.prepare_cache` (it reads a ``prebuilt``
source instead of building one); this class only names the folder and, once opened, holds
the defaults the builder recorded (image size, augmentation, mean/std) where every other
source has them as class attributes.
"""

from __future__ import annotations

from cskd_tf.data.sources.base import Listing, Source, register_source
from cskd_tf.errors import ConfigError, DataError


@register_source("shards", display_name="Shard cache")
class ShardCacheSource(Source):
    name = "shards"
    prebuilt = True
    layout = "the shard cache cskd-build-cache printed (<cache_dir>/<key> with meta.json)"

    def __init__(self, data_dir: str = ""):
        self._defaults = None
        # Not made absolute like a local folder: it may be a URL (gs://, ram://).
        super().__init__()
        self.data_dir = data_dir
        if not data_dir:
            raise ConfigError(f"dataset 'shards' needs config.data_dir; set --config.data_dir "
                              f"to {self.layout}")

    def adopt(self, defaults):
        """Takes the recorded defaults (a :class:`cskd_tf.data.shards.CacheDefaults`)."""
        self._defaults = defaults

    def _recorded(self, name):
        if self._defaults is None:
            raise DataError(f"the defaults of the shard cache {self.data_dir} are known once "
                            "it is opened; call cskd_tf.data.prepare(config) first")
        return getattr(self._defaults, name)

    # What other sources declare as class attributes, this one reads from the cache.
    default_image_size = property(lambda self: self._recorded("default_image_size"))
    default_augment = property(lambda self: self._recorded("default_augment"))
    mean = property(lambda self: self._recorded("mean"))
    std = property(lambda self: self._recorded("std"))

    def fingerprint(self) -> str:
        return self.data_dir

    def load(self) -> Listing:
        raise DataError(f"{self.data_dir} is a built shard cache; it is opened, not listed "
                        "(use cskd_tf.data.prepare)")

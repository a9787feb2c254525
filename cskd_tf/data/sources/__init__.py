"""Data sources: where the examples of each ``config.dataset`` are and how to list them.

* :mod:`.base`: :class:`Source`, :class:`SplitData`, :class:`Listing` and the registry
  functions (``@register_source``, :func:`get_source`, :func:`source_names`) over
  :data:`cskd_tf.registry.SOURCES`;
* :mod:`.splits`: the split rules every listing goes through (:func:`select`);
* :mod:`.arrays`: ``digits``, ``fashion_mnist``; :mod:`.folders`: ``tinyimagenet``,
  ``imagefolder``, ``mit67``; :mod:`.tfds`: ``tfds:<name>``; :mod:`.cache`: ``shards``
  (a cache built earlier by cskd-build-cache).

Importing the package imports every module of it (:meth:`~cskd_tf.registry.Registry.discover`),
which registers every source: a new source is one new module. The names below are the
public API.
"""

from cskd_tf.data.sources.arrays import DigitsSource, FashionMNISTSource, read_idx
from cskd_tf.data.sources.base import (IMAGENET_MEAN, IMAGENET_STD, Listing, Source, SplitData,
                                       array_fingerprint, get_source, register_source,
                                       source_names, tree_fingerprint)
from cskd_tf.data.sources.cache import ShardCacheSource
from cskd_tf.data.sources.folders import (ImageFolderSource, MIT67Source, TinyImageNetSource,
                                          list_images)
from cskd_tf.data.sources.splits import select
from cskd_tf.data.sources.tfds import TFDSSource
from cskd_tf.registry import SOURCES

SOURCES.discover()  # registers the sources of every module, including any not imported above

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SOURCES", "DigitsSource", "FashionMNISTSource",
           "ImageFolderSource", "Listing", "MIT67Source", "ShardCacheSource", "Source",
           "SplitData", "TFDSSource", "TinyImageNetSource", "array_fingerprint", "get_source",
           "list_images", "read_idx", "register_source", "select", "source_names",
           "tree_fingerprint"]

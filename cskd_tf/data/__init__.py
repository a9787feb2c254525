"""Data for cskd_tf: sources, the per-class TFRecord shard cache, and the CS-KD pair pipeline.

* :mod:`cskd_tf.data.sources`: where each dataset's examples are (``config.dataset``, one
  registered source per layout) and the split rules;
* :mod:`cskd_tf.data.shards`: each split written once as per-class TFRecord files;
* :mod:`cskd_tf.data.pairs`: the class-wise pair sampler (exact in memory, or streaming);
* :mod:`cskd_tf.data.augment`: per-dataset augmentation (``config.augment``);
* :mod:`cskd_tf.data.pipeline`: the API below;
* :mod:`cskd_tf.data.from_dataset`: pairs from the user's own tf.data.Dataset.
"""

from cskd_tf.data.augment import AUGMENTS
from cskd_tf.data.from_dataset import pairs_from_dataset
from cskd_tf.data.pairs import pair_dataset
from cskd_tf.data.pipeline import (DatasetInfo, describe_images, eval_dataset, eval_preprocess,
                                   mismatch_warning, prepare, train_dataset)
from cskd_tf.data.shards import PreparedSplit
from cskd_tf.data.sources import source_names

__all__ = ["AUGMENTS", "DatasetInfo", "PreparedSplit", "describe_images", "eval_dataset",
           "eval_preprocess", "mismatch_warning", "pair_dataset", "pairs_from_dataset", "prepare",
           "source_names", "train_dataset"]

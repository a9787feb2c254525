"""cskd-build-cache: build a config's per-class TFRecord shard cache once, to train elsewhere.

    cskd-build-cache --config=configs/imagenet_tfds.py \
        --config.data_dir=/data/tfds --config.cache_dir=/data/cskd-cache

reads the dataset (``config.dataset``/``data_dir``, with ``max_classes``,
``max_train_per_class``, ``val_fraction`` and ``seed`` applied) into
``<cache_dir>/<key>/`` as cskd_tf.data.shards describes, and prints that folder. Copy the
folder anywhere tf.io.gfile reads (NFS, ``gsutil -m cp -r`` to GCS) and train with
``config.dataset = "shards"`` and ``config.data_dir`` = that folder (configs/imagenet_shards.py):
the workers then need neither the original files nor the source's tools.
"""

from __future__ import annotations

import json

from cskd_tf.cli import common  # sets TF_CPP_MIN_LOG_LEVEL first

from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from cskd_tf.data.pipeline import prepare

    config = common.load_config(FLAGS.config, "")
    info, _ = prepare(config)
    print(json.dumps({"cache": info.cache_path, "splits": info.splits,
                      "num_classes": info.num_classes}, indent=2))
    print(f"train from it with --config.dataset=shards --config.data_dir={info.cache_path}")


def run():
    common.run(main)


if __name__ == "__main__":
    run()

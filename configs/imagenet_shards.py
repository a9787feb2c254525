"""ImageNet from a pre-built per-class TFRecord shard cache (cskd_tf/data/shards.py format),
the paper's Table 5 recipe as in configs/imagenet_tfds.py.

Build the cache once, on a machine with the TFDS data (see configs/imagenet_tfds.py):

    cskd-build-cache --config=configs/imagenet_tfds.py \
        --config.data_dir=/data/tfds --config.cache_dir=/data/cskd-cache

It prints the cache folder (``/data/cskd-cache/tfds_imagenet2012-<hash>``); copy it where
every worker reads it with tf.io.gfile (an NFS mount, or ``gsutil -m cp -r`` to GCS) and
train from it on each worker (TF_CONFIG set per machine, docs/distributed.md):

    cskd-train --config=configs/imagenet_shards.py \
        --config.data_dir=gs://BUCKET/tfds_imagenet2012-<hash> --workdir=/shared/runs/imagenet_cskd
"""

from cskd_tf.recipes import paper_config


def get_config():
    config = paper_config("imagenet")
    config.dataset = "shards"
    config.data_dir = ""  # the cache folder build_cache printed (required)
    config.distribution = "auto"
    return config

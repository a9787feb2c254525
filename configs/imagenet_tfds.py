"""ImageNet (ILSVRC-2012) through TFDS: the paper's Table 5 recipe (ResNet-50, 90 epochs,
global batch 256, lr 0.1 ÷10 at epochs 30 and 60, λ = 1, T = 4).

TFDS cannot download ImageNet. Put ``ILSVRC2012_img_train.tar`` and
``ILSVRC2012_img_val.tar`` in ``<data_dir>/downloads/manual/`` (TFDS's manual_dir, see the
TFDS catalog entry for imagenet2012); the first run prepares TFDS's copy in ``data_dir``
and then the per-class shard cache. Labelled splits: train, validation (reported as "val").

    cskd-train --config=configs/imagenet_tfds.py --config.data_dir=/data/tfds \
        --workdir=runs/imagenet_cskd [--config.method=ce] [--config.mixed_precision=mixed_float16]

On several GPUs ``distribution="auto"`` picks MirroredStrategy, and with TF_CONFIG
MultiWorkerMirroredStrategy; ``batch_size`` stays the global batch. For a multi-worker run,
build the shard cache once first (cskd-build-cache --config=THIS_FILE ...)
and train from it with configs/imagenet_shards.py; see docs/distributed.md.
"""

from cskd_tf.recipes import paper_config


def get_config():
    # The recipe uses pair_mode="stream": 1.28M JPEGs do not fit in memory.
    config = paper_config("imagenet")  # dataset="tfds:imagenet2012"
    config.distribution = "auto"
    return config

"""The paper's recipe on CUB-200-2011 (TFDS 'caltech_birds2011').

    cskd-train --config=configs/cub200_resnet18.py --workdir=runs/cub200_cskd [--config.method=ce]
"""

from cskd_tf.recipes import paper_config


def get_config():
    return paper_config("cub200")

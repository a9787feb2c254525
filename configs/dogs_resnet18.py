"""The paper's recipe on Stanford Dogs (TFDS 'stanford_dogs').

    cskd-train --config=configs/dogs_resnet18.py --workdir=runs/dogs_cskd [--config.method=ce]
"""

from cskd_tf.recipes import paper_config


def get_config():
    return paper_config("dogs")

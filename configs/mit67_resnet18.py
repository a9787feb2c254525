"""The paper's recipe on MIT Indoor-67.

Official TrainImages.txt/TestImages.txt layout; set --config.data_dir.

    cskd-train --config=configs/mit67_resnet18.py --workdir=runs/mit67_cskd [--config.method=ce]
"""

from cskd_tf.recipes import paper_config


def get_config():
    return paper_config("mit67")

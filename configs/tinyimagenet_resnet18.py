r"""The paper's recipe on TinyImageNet-200 at 32 px.

Official directory layout; set --config.data_dir.

    cskd-train --config=configs/tinyimagenet_resnet18.py --workdir=runs/tinyimagenet_cskd \
        [--config.method=ce]
"""

from cskd_tf.recipes import paper_config


def get_config():
    return paper_config("tinyimagenet")

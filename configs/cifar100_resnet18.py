r"""The paper's recipe on CIFAR-100 (TFDS 'cifar100'; downloads when online).

    cskd-train --config=configs/cifar100_resnet18.py --workdir=runs/cifar100_cskd \
        [--config.method=ce]
"""

from cskd_tf.recipes import paper_config


def get_config():
    return paper_config("cifar100")

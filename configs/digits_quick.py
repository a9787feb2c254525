"""The embedded default: scikit-learn's digits (no download), about a minute on 2 CPU cores.

    cskd-train --config=configs/digits_quick.py --workdir=runs/digits_quick
"""

from cskd_tf.config import default_config


def get_config():
    config = default_config()
    config.dataset = "digits"
    config.model = "preact_resnet18"
    config.model_width = 16
    config.augment = "digits"
    config.batch_size = 64
    config.num_epochs = 30
    config.learning_rate = 0.05
    config.lr_decay_epochs = (15, 23)
    config.weight_decay = 5e-4
    return config

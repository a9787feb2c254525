"""The paper's training recipes per dataset, from which configs/*.py are made.

Yun et al. (CVPR 2020), Section 4.1: SGD with momentum 0.9, weight decay
1e-4, initial learning rate 0.1 divided by 10 at epochs 100 and 150 of 200;
batch 128 on CIFAR-100 / TinyImageNet (PreAct ResNet-18, 32 px) and 32 on
the fine-grained sets (ImageNet-style ResNet-18, 224 px); T = 4, λ = 1 on the
coarse datasets and λ = 3 on the fine-grained ones. ImageNet (Table 5):
90 epochs, batch 256, lr ÷10 at epochs 30 and 60.
"""

from __future__ import annotations

from cskd_tf.config import default_config

# dataset key -> the fields that differ from default_config().
PAPER_DATASETS = {
    "cifar100": dict(dataset="tfds:cifar100", model="preact_resnet18", augment="cifar",
                     image_size=32, batch_size=128, lambda_cls=1.0),
    "tinyimagenet": dict(dataset="tinyimagenet", model="preact_resnet18", augment="tinyimagenet",
                         image_size=32, batch_size=128, lambda_cls=1.0),
    "cub200": dict(dataset="tfds:caltech_birds2011", model="resnet18", augment="finegrained",
                   image_size=224, batch_size=32, lambda_cls=3.0),
    "dogs": dict(dataset="tfds:stanford_dogs", model="resnet18", augment="finegrained",
                 image_size=224, batch_size=32, lambda_cls=3.0),
    "mit67": dict(dataset="mit67", model="resnet18", augment="finegrained",
                  image_size=224, batch_size=32, lambda_cls=3.0),
    "imagenet": dict(dataset="tfds:imagenet2012", model="resnet50", augment="finegrained",
                     image_size=224, batch_size=256, lambda_cls=1.0, num_epochs=90,
                     lr_decay_epochs=(30, 60), pair_mode="stream"),
}


def paper_config(dataset_key, **overrides):
    """default_config() with the paper's recipe for ``dataset_key`` and overrides."""
    config = default_config()
    config.update(PAPER_DATASETS[dataset_key])
    config.update(overrides)
    return config

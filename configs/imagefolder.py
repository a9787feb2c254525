"""A starting point for your own images: one folder per class.

    cskd-train --config=configs/imagefolder.py --config.data_dir=PATH --workdir=runs/mine

PATH holds ``train/<class>/*.jpg|png`` and, if you have them, ``val/<class>/...`` and
``test/<class>/...`` (without val, ``val_fraction`` of train is held out for model
selection and temperature scaling). Any image size and channel count.

The defaults fit photos (objects, scenes, animals): ResNet-18 at 224 px, trained with
random-resized-crop + horizontal flip and evaluated with resize 256 / centre crop 224, the
paper's fine-grained recipe (batch 32, lr 0.1, λ = 1; the paper uses λ = 3 on
fine-grained classes such as bird species). cskd-train prints the size and augmentation
it uses. Change what does not fit your folder:

* small images (about 32 px, icons, thumbnails): ``--config.image_size=32
  --config.augment=cifar --config.model=cskd_preact_resnet18 --config.batch_size=128``
* images that must not be mirrored (text, digits, some medical scans):
  ``--config.augment=digits`` at small sizes, or ``--config.augment=none``
* grey images: nothing to do (the channel count is read from the files)
* a CPU and a few hundred images: ``--config.model_width=16 --config.num_epochs=30``
"""

from cskd_tf.config import default_config


def get_config():
    config = default_config()
    config.dataset = "imagefolder"
    config.data_dir = ""  # your folder: --config.data_dir=PATH
    config.image_size = 224  # model input, S x S px
    config.augment = "finegrained"  # random-resized-crop + flip; eval resize 256, crop 224
    config.model = "resnet18"
    config.batch_size = 32
    config.learning_rate = 0.1
    config.lambda_cls = 1.0
    return config

"""Building the CSKDModel a config describes: the one constructor of training and restoring.

Both :mod:`cskd_tf.training.fit_setup` (a new run) and :mod:`cskd_tf.training.restore`
(a model rebuilt from a run folder's checkpoint) call :func:`build_model`, so a restored
model has exactly the layers its checkpoint was written from. It sits in its own module so
that restoring (used by the KD teacher loader, which fit_setup uses) does not import
fit_setup back.
"""

from __future__ import annotations

import tensorflow as tf

from cskd_tf import losses, models
from cskd_tf.models.cskd_model import CSKDModel


def build_model(config, num_classes, image_shape, mean, std, method=None, class_names=None):
    """The CSKDModel for a config, built (weights created) but not compiled.

    It takes images in [0, 1] (``pixel_max=1``, what the data pipeline yields) and carries
    ``class_names``, so its ``model.keras`` exports and evaluates on its own.
    """
    method = method or losses.get_method(config.method, config)
    backbone = models.build(config.model, num_classes=num_classes, input_shape=tuple(image_shape),
                            width=int(config.model_width), head=method.head, init=config.init)
    # λ and T are the method's (built from config.lambda_cls / config.temperature).
    model = CSKDModel(backbone, method=method, mean=mean, std=std,
                      weight_decay=float(config.weight_decay), class_names=class_names,
                      pixel_max=1.0)
    model(tf.zeros((1, *image_shape), tf.float32))
    return model

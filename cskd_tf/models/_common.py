"""Helpers shared by the hand-written backbones: the stage/pooling contract,
plus the convolution blocks of :mod:`cskd_tf.layers` re-exported for them.
"""

from __future__ import annotations

from keras import layers

from cskd_tf.layers import BN_EPSILON, BN_MOMENTUM, batch_norm, bn_relu, conv, relu  # noqa: F401


def stage_output(x, index):
    """Expose ``x`` as the output of stage ``index`` (layer ``stage{index}``).

    Methods that tap intermediate stages (BYOT and friends) look the layers
    up by these names, so every backbone must create exactly ``stage1`` ..
    ``stageN`` in order of increasing depth.
    """
    return layers.Identity(name=f"stage{index}")(x)


def global_pool(x):
    return layers.GlobalAveragePooling2D(name="global_pool")(x)


def channels(x):
    return int(x.shape[-1])

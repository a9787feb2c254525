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


# The four stages of every ResNet-style backbone here start with these strides.
_STAGE_STRIDES = (1, 2, 2, 2)


def stack_stages(x, width, blocks, block_fn, after_last=None):
    """Stages of ``blocks[i]`` blocks with widths w, 2w, 4w, 8w and strides 1, 2, 2, 2.

    ``block_fn(x, filters, strides, name)`` builds one block; ``after_last(x)`` (if any)
    runs on the last stage before it is exposed as ``stageN``. Returns the pooled features.
    """
    for stage, (num_blocks, stride) in enumerate(zip(blocks, _STAGE_STRIDES), start=1):
        filters = width * 2 ** (stage - 1)
        for block in range(num_blocks):
            x = block_fn(x, filters, stride if block == 0 else 1, f"s{stage}b{block + 1}")
        if stage == len(blocks) and after_last is not None:
            x = after_last(x)
        x = stage_output(x, stage)
    return global_pool(x)

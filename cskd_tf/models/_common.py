"""Helpers shared by the hand-written backbones: the stage/pooling contract,
plus the convolution blocks of :mod:`cskd_tf.layers` re-exported for them.
"""

from __future__ import annotations

from keras import layers

from cskd_tf.layers import BN_EPSILON, BN_MOMENTUM, batch_norm, bn_relu, conv, relu  # noqa: F401


def conv_symmetric(x, filters, kernel_size, name, strides=1, groups=1):
    """A conv padded like PyTorch's ``padding=kernel_size // 2`` at any stride.

    PyTorch pads ``k // 2`` on every side and drops what does not fit, so a
    stride-2 3x3 conv samples rows/columns ``-1, 1, 3, ...``; Keras' "same"
    pads only after the last row when the total is odd and samples ``0, 2, 4,
    ...``: same shapes, a one-pixel shift against the 1x1 shortcut.
    """
    if strides == 1 or kernel_size == 1:
        # Stride 1: "same" pads symmetrically for odd kernels. 1x1: no padding at all.
        return conv(x, filters, kernel_size, name, strides=strides, groups=groups)
    x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    return conv(x, filters, kernel_size, name, strides=strides, groups=groups, padding="valid")


def max_pool_symmetric(x, name):
    """PyTorch's ``MaxPool2d(3, stride=2, padding=1)`` on a non-negative (post-ReLU) map.

    PyTorch pads a max-pool with -inf. Every 3x3/2 window of the padded map
    holds the real pixel at its centre, and the input is >= 0, so padding
    with zeros selects the same maxima.
    """
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)


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

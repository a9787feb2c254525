"""ImageNet-style ResNets (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016) in torchvision's layout, the one the CS-KD code's
224 px networks copy (github.com/alinlab/cs-kd, ``models/resnet.py``, class
``ResNet``).

Layout: 7x7 stride-2 stem convolution, BN-ReLU, 3x3 stride-2 max-pool, four
stages of post-activation residual blocks (widths w, 2w, 4w, 8w; strides 1,
2, 2, 2), global average pooling, shared head. Convolutions are bias-free,
shortcuts that change shape are 1x1 conv + BN, and every strided convolution
and the max-pool pad symmetrically as PyTorch's ``padding=k // 2`` does (see
:func:`~cskd_tf.models._common.conv_symmetric`); Keras' "same" would shift
the residual branch one pixel against the shortcut.

* ``resnet10`` / ``resnet18``: BasicBlock (two 3x3 convs), blocks 1-1-1-1 /
  2-2-2-2. Trainable parameters at 1000 classes: resnet10 5,418,792 (the
  CS-KD code's ``resnet10``); resnet18 11,689,512 (= torchvision).
* ``resnet50`` / ``resnet101``: Bottleneck ``1x1(p) - 3x3(p, stride) -
  1x1(4p)`` blocks 3-4-6-3 / 3-4-23-3 with the stride on the 3x3 conv
  (torchvision's "v1.5"): 25,557,032 and 44,549,160 at 1000 classes
  (= torchvision).
* ``keras_resnet50`` / ``keras_resnet101``: ``keras.applications.ResNet50/101``
  for users who want Keras' own: the original "v1" bottleneck (stride on the
  first 1x1 conv), conv biases (25,583,592 / 44,601,832 parameters), Keras'
  "same" padding and BN momentum 0.99. Not what the paper cells train.
  Kernels are initialised He-normal (see :func:`wrap_application`); ``width``
  is not supported.

``width`` scales w (standard 64) for the hand-written nets. Stages
``stage1``..``stage4`` are the outputs of the last block of each stage
(post-ReLU), so ``features`` is the global average of ``stage4``.
"""

from __future__ import annotations

import keras
from keras import layers

from cskd_tf.models._common import (
    batch_norm,
    bn_relu,
    channels,
    conv,
    conv_symmetric,
    global_pool,
    max_pool_symmetric,
    relu,
    stack_stages,
    stage_output,
)
from cskd_tf.errors import ModelError
from cskd_tf.models.registry import register


def imagenet_stem(inputs, width):
    """7x7/2 convolution (padding 3), BN-ReLU and 3x3/2 max-pool (padding 1).

    Padded as PyTorch pads them.
    """
    x = conv_symmetric(inputs, width, 7, "stem_conv", strides=2)
    x = bn_relu(x, "stem")
    return max_pool_symmetric(x, "stem_pool")


def projection(x, filters, strides, name):
    """Identity, or 1x1 conv + BN when the block changes shape."""
    if strides == 1 and channels(x) == filters:
        return x
    y = conv(x, filters, 1, f"{name}_shortcut_conv", strides=strides)
    return batch_norm(y, f"{name}_shortcut_bn")


def _basic_block(x, filters, strides, name):
    shortcut = projection(x, filters, strides, name)
    y = conv_symmetric(x, filters, 3, f"{name}_conv1", strides=strides)
    y = bn_relu(y, f"{name}_1")
    y = conv(y, filters, 3, f"{name}_conv2")
    y = batch_norm(y, f"{name}_2_bn")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return relu(y, f"{name}_out")


def basic_resnet_body(inputs, width, blocks):
    """Shared body of the BasicBlock ResNets; returns the pooled features."""
    return stack_stages(imagenet_stem(inputs, width), width, blocks, _basic_block)


_EXPANSION = 4


def bottleneck_body(inputs, width, blocks, groups=1, width_per_group=64):
    """Body of torchvision's Bottleneck ResNets and ResNeXts; returns the pooled features.

    Block on ``p`` planes: ``conv1x1(d)-BN-ReLU-conv3x3(d, groups, stride)-BN-ReLU-
    conv1x1(4p)-BN`` plus the shortcut, then ReLU, with the inner width
    ``d = floor(p · width_per_group / 64) · groups`` as torchvision computes it
    (ResNet-50: d = p; ResNeXt 32x4d: d = 2p).
    """
    def block(x, planes, strides, name):
        inner = planes * width_per_group // 64 * groups
        out = planes * _EXPANSION
        shortcut = projection(x, out, strides, name)
        y = conv(x, inner, 1, f"{name}_conv1")
        y = bn_relu(y, f"{name}_1")
        y = conv_symmetric(y, inner, 3, f"{name}_conv2", strides=strides, groups=groups)
        y = bn_relu(y, f"{name}_2")
        y = conv(y, out, 1, f"{name}_conv3")
        y = batch_norm(y, f"{name}_3_bn")
        y = layers.Add(name=f"{name}_add")([y, shortcut])
        return relu(y, f"{name}_out")

    return stack_stages(imagenet_stem(inputs, width), width, blocks, block)


@register("resnet10", style="imagenet", min_size=8, standard_width=64,
          torch_conv_init="kaiming_normal_fan_out")
def resnet10(inputs, width):
    """ResNet-10 (ImageNet-style BasicBlock, 1-1-1-1); 5,418,792 params at 1000 classes."""
    return basic_resnet_body(inputs, width, (1, 1, 1, 1))


@register("resnet18", style="imagenet", min_size=8, standard_width=64,
          torch_conv_init="kaiming_normal_fan_out")
def resnet18(inputs, width):
    """ResNet-18 (ImageNet-style BasicBlock, 2-2-2-2); 11,689,512 params at 1000 classes."""
    return basic_resnet_body(inputs, width, (2, 2, 2, 2))


def wrap_application(app_fn, inputs, stage_layers):
    """Rebuild a ``keras.applications`` network on ``inputs`` with stage layers.

    The application is first built on a throwaway Input (``input_tensor=``
    skips its ``min_size=32`` check for architectures that still work on
    smaller maps) and then cloned onto ``inputs`` so that

    * an Identity ``stageK`` is inserted *inline* after the K-th layer named
      in ``stage_layers``; a side branch would be pruned from the final
      functional model because nothing downstream consumes it;
    * every Conv2D/Dense gets a He-normal ``kernel_initializer`` in its
      config (keras.applications hard-codes Glorot-uniform), so a model
      rebuilt from ``get_config`` initialises the same way;
    * the layers land in the outer functional graph instead of a nested
      sub-model, so ``model.get_layer("conv4_block6_out")`` works.

    Returns the globally pooled output of the last stage.
    """
    template = app_fn(
        include_top=False,
        weights=None,
        input_tensor=keras.Input(shape=tuple(inputs.shape[1:])),
        pooling=None,
    )
    stage_of = {layer_name: k for k, layer_name in enumerate(stage_layers, start=1)}
    missing = sorted(set(stage_of) - {layer.name for layer in template.layers})
    if missing:  # guards against a renamed layer in a future Keras release
        raise ModelError(
            f"{template.name} has no layer(s) {', '.join(missing)}; "
            "update the stage layer names in cskd_tf/models for this Keras version"
        )

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            # Serialised fresh per layer: each instance then draws its own
            # default seed instead of repeating one draw for equal shapes.
            config["kernel_initializer"] = keras.initializers.serialize(
                keras.initializers.HeNormal()
            )
        return layer.__class__.from_config(config)

    def call_layer(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        stage = stage_of.get(layer.name)
        return stage_output(out, stage) if stage else out

    # keras.applications models keep their input as a one-element list.
    clone = keras.models.clone_model(
        template,
        input_tensors=[inputs] if isinstance(template.input, list) else inputs,
        clone_function=clone_layer,
        call_function=call_layer,
    )
    return global_pool(clone.output)


@register("resnet50", style="imagenet", min_size=8, standard_width=64,
          torch_conv_init="kaiming_normal_fan_out")
def resnet50(inputs, width):
    """ResNet-50 in torchvision's v1.5 layout (Bottleneck 3-4-6-3).

    25,557,032 params at 1000 classes.
    """
    return bottleneck_body(inputs, width, (3, 4, 6, 3))


@register("resnet101", style="imagenet", min_size=8, standard_width=64,
          torch_conv_init="kaiming_normal_fan_out")
def resnet101(inputs, width):
    """ResNet-101 in torchvision's v1.5 layout (Bottleneck 3-4-23-3).

    44,549,160 params at 1000 classes.
    """
    return bottleneck_body(inputs, width, (3, 4, 23, 3))


@register("keras_resnet50", style="imagenet", min_size=8, torch_conv_init="kaiming_normal_fan_out")
def keras_resnet50(inputs, width):
    """ResNet-50 v1 via keras.applications (Bottleneck 3-4-6-3).

    25,583,592 params at 1000 classes.
    """
    return wrap_application(
        keras.applications.ResNet50,
        inputs,
        ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    )


@register("keras_resnet101", style="imagenet", min_size=8, torch_conv_init="kaiming_normal_fan_out")
def keras_resnet101(inputs, width):
    """ResNet-101 v1 via keras.applications (Bottleneck 3-4-23-3).

    44,601,832 params at 1000 classes.
    """
    return wrap_application(
        keras.applications.ResNet101,
        inputs,
        ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
    )

"""ImageNet-style ResNets (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016).

Layout: 7x7 stride-2 stem convolution, BN-ReLU, 3x3 stride-2 max-pool, four
stages of post-activation residual blocks (widths w, 2w, 4w, 8w; strides 1,
2, 2, 2), global average pooling, shared head.

* ``resnet10`` / ``resnet18``: hand-written BasicBlock networks (blocks
  1-1-1-1 / 2-2-2-2) in the torchvision layout (bias-free convolutions,
  1x1 conv + BN projection shortcuts). Trainable parameters at 1000 classes:
  resnet10 5,418,792; resnet18 11,689,512 (= torchvision). ``width`` scales
  w (standard 64).
* ``resnet50`` / ``resnet101``: ``keras.applications.ResNet50/101`` (Bottleneck
  blocks 3-4-6-3 / 3-4-23-3). These use the original "v1" bottleneck with
  the stride on the first 1x1 convolution, whereas torchvision ("v1.5")
  strides the 3x3; the layers and shapes are otherwise the same. The
  Keras convolutions carry biases, so they have slightly more trainable
  parameters than torchvision (25,583,592 vs 25,557,032 and 44,601,832 vs
  44,549,160 at 1000 classes, +0.1%). ``width`` is not supported.
  Their kernels are initialised He-normal like the PyTorch reference
  (see :func:`wrap_application`).

Stages ``stage1``..``stage4`` are the outputs of the last block of each stage
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
    global_pool,
    relu,
    stack_stages,
    stage_output,
)
from cskd_tf.errors import ModelError
from cskd_tf.models.registry import register



def imagenet_stem(inputs, width):
    """7x7/2 convolution, BN-ReLU and 3x3/2 max-pool (4x downsampling)."""
    x = conv(inputs, width, 7, "stem_conv", strides=2)
    x = bn_relu(x, "stem")
    return layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def projection(x, filters, strides, name):
    """Identity, or 1x1 conv + BN when the block changes shape."""
    if strides == 1 and channels(x) == filters:
        return x
    y = conv(x, filters, 1, f"{name}_shortcut_conv", strides=strides)
    return batch_norm(y, f"{name}_shortcut_bn")


def _basic_block(x, filters, strides, name):
    shortcut = projection(x, filters, strides, name)
    y = conv(x, filters, 3, f"{name}_conv1", strides=strides)
    y = bn_relu(y, f"{name}_1")
    y = conv(y, filters, 3, f"{name}_conv2")
    y = batch_norm(y, f"{name}_2_bn")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return relu(y, f"{name}_out")


def basic_resnet_body(inputs, width, blocks):
    """Shared body of the BasicBlock ResNets; returns the pooled features."""
    return stack_stages(imagenet_stem(inputs, width), width, blocks, _basic_block)


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


@register("resnet50", style="imagenet", min_size=8, torch_conv_init="kaiming_normal_fan_out")
def resnet50(inputs, width):
    """ResNet-50 v1 via keras.applications (Bottleneck 3-4-6-3); 25,583,592 params at 1000 classes."""
    return wrap_application(
        keras.applications.ResNet50,
        inputs,
        ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    )


@register("resnet101", style="imagenet", min_size=8, torch_conv_init="kaiming_normal_fan_out")
def resnet101(inputs, width):
    """ResNet-101 v1 via keras.applications (Bottleneck 3-4-23-3); 44,601,832 params at 1000 classes."""
    return wrap_application(
        keras.applications.ResNet101,
        inputs,
        ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
    )

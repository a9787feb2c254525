"""The CS-KD reference code's PreAct ResNets and PyTorch's initialisation.

``tests/data/cskd_preact_resnet18_w2_torch.npz`` holds a width-2, 10-class
``CIFAR_ResNet18`` of github.com/alinlab/cs-kd (``models/resnet.py``, its width
made a parameter) with random weights and BN statistics, two input images and
the logits PyTorch computed for them in eval mode. Loading those weights into
``cskd_preact_resnet18`` must give the same logits: that pins the layer order,
the pre-activated identity shortcut, the stem BN, the missing final BN and the
symmetric padding of the strided convolutions all at once.

The 224 px networks have golden files made the same way (``tests/data/*_torch.npz``,
from the reference's ``ResNet`` with its width made a parameter and its unchanged
``DenseNet``, on 56 / 40 px inputs and 5 classes): ResNet-10/18 at width 4,
ResNet-50/101 at width 2, DenseNet-121 at growth rate 2 (stem 4), and ResNeXt-101's
grouped bottleneck at width 4 with 4 groups x 16 channels per group (the code path of
32x4d; the full width would not fit a small file). The maps reach odd sizes on the
way (7 at 56 px, 5 at 40 px), so PyTorch's flooring is pinned as well as its padding.
"""

import math
import os

import keras
import numpy as np
import pytest

from cskd_tf import models
from cskd_tf.errors import ModelError
from cskd_tf.models import heads, registry, resnet

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLDEN = os.path.join(DATA, "cskd_preact_resnet18_w2_torch.npz")


def _keras_name(torch_prefix):
    if torch_prefix in ("conv1", "bn1"):
        return {"conv1": "stem_conv", "bn1": "stem_bn"}[torch_prefix]
    if torch_prefix == "linear":
        return "classifier"
    stage, block, part = torch_prefix[len("layer"):].split(".", 2)
    part = "shortcut_conv" if part == "shortcut.0" else part
    return f"s{stage}b{int(block) + 1}_{part}"


def _torchvision_resnet_name(torch_prefix):
    """torchvision ``ResNet`` module names -> this project's layer names."""
    if torch_prefix in ("conv1", "bn1", "fc"):
        return {"conv1": "stem_conv", "bn1": "stem_bn", "fc": "classifier"}[torch_prefix]
    stage, block, part = torch_prefix[len("layer"):].split(".", 2)
    part = {"downsample.0": "shortcut_conv", "downsample.1": "shortcut_bn"}.get(part, part)
    if part.startswith("bn"):
        part = f"{part[2:]}_bn"
    return f"s{stage}b{int(block) + 1}_{part}"


def _torchvision_densenet_name(torch_prefix):
    """torchvision ``DenseNet`` module names -> this project's layer names."""
    if torch_prefix == "classifier":
        return "classifier"
    parts = torch_prefix.split(".")[1:]  # drop "features"
    fixed = {"conv0": "stem_conv", "norm0": "stem_bn", "norm5": "post_bn"}
    if len(parts) == 1:
        return fixed[parts[0]]
    if parts[0].startswith("transition"):
        return f"t{parts[0][len('transition'):]}_{'bn' if parts[1] == 'norm' else 'conv'}"
    block, layer, part = parts[0][len("denseblock"):], parts[1][len("denselayer"):], parts[2]
    part = {"norm1": "0_bn", "norm2": "1_bn"}.get(part, part)
    return f"d{block}l{layer}_{part}"


def _load_torch_weights(model, state, keras_name=_keras_name):
    groups = {}
    for key, value in state.items():
        prefix, leaf = key.rsplit(".", 1)
        groups.setdefault(prefix, {})[leaf] = value
    loaded = set()
    for prefix, leaves in groups.items():
        layer = model.get_layer(keras_name(prefix))
        if "running_mean" in leaves:
            layer.set_weights([leaves[k]
                               for k in ("weight", "bias", "running_mean", "running_var")])
        elif leaves["weight"].ndim == 4:  # (out, in, kh, kw) -> (kh, kw, in, out)
            layer.set_weights([leaves["weight"].transpose(2, 3, 1, 0)])
        else:
            layer.set_weights([leaves["weight"].T, leaves["bias"]])
        loaded.add(layer.name)
    return loaded


def test_matches_reference_forward_pass():
    golden = np.load(GOLDEN)
    state = {k[2:]: golden[k] for k in golden.files if k.startswith("w/")}
    model = models.build("cskd_preact_resnet18", num_classes=10, width=2)
    loaded = _load_torch_weights(model, state)
    # Every weight-carrying layer came from the reference, and nothing was left over.
    assert loaded == {layer.name for layer in model.layers if layer.weights}
    logits = model(golden["x"].transpose(0, 2, 3, 1), training=False)["logits"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits), golden["y"], atol=1e-5)


def _bottleneck_g4x16(num_classes, input_shape, width):
    """ResNeXt-101's body (3-4-23-3 grouped bottlenecks) at 4 groups x 16.

    Small enough to commit.
    """
    inputs = keras.Input(shape=input_shape)
    pooled = resnet.bottleneck_body(inputs, width, (3, 4, 23, 3), groups=4, width_per_group=16)
    return heads.attach_head(inputs, pooled, num_classes)


# golden file -> (how to build this project's net, torch-name mapping)
REFERENCE_224 = {
    "resnet10_w4": (lambda **kw: models.build("resnet10", width=4, **kw), _torchvision_resnet_name),
    "resnet18_w4": (lambda **kw: models.build("resnet18", width=4, **kw), _torchvision_resnet_name),
    "resnet50_w2": (lambda **kw: models.build("resnet50", width=2, **kw), _torchvision_resnet_name),
    "resnet101_w2": (lambda **kw: models.build("resnet101", width=2, **kw),
                     _torchvision_resnet_name),
    "resnext101_g4x16_w4": (lambda **kw: _bottleneck_g4x16(width=4, **kw),
                            _torchvision_resnet_name),
    "densenet121_k2": (lambda **kw: models.build("densenet121", width=2, **kw),
                       _torchvision_densenet_name),
}


@pytest.mark.parametrize("golden_name", sorted(REFERENCE_224))
def test_224px_nets_match_reference_forward_pass(golden_name):
    golden = np.load(os.path.join(DATA, f"{golden_name}_torch.npz"))
    state = {k[2:]: golden[k] for k in golden.files if k.startswith("w/")}
    make, keras_name = REFERENCE_224[golden_name]
    x = golden["x"].transpose(0, 2, 3, 1)
    model = make(num_classes=golden["y"].shape[1], input_shape=x.shape[1:])
    loaded = _load_torch_weights(model, state, keras_name)
    assert loaded == {layer.name for layer in model.layers if layer.weights}
    logits = keras.ops.convert_to_numpy(model(x, training=False)["logits"])
    np.testing.assert_allclose(logits, golden["y"], atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121"])
def test_224px_nets_pad_like_pytorch(name):
    model = models.build(name, num_classes=10, input_shape=(32, 32, 3), width=2)
    assert model.get_layer("stem_conv_pad").padding == ((3, 3), (3, 3))
    assert model.get_layer("stem_conv").padding == "valid"
    assert model.get_layer("stem_pool_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("stem_pool").padding == "valid"
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(bn.momentum, bn.epsilon) for bn in bns} == {(0.9, 1e-5)}  # PyTorch's 0.1 and 1e-5
    if name != "densenet121":  # the strided 3x3 conv of the first block of stage 2
        strided = "s2b1_conv1" if name == "resnet18" else "s2b1_conv2"
        assert model.get_layer(f"{strided}_pad").padding == ((1, 1), (1, 1))
        assert model.get_layer(strided).strides == (2, 2)


@pytest.mark.parametrize("name, expected", [("cskd_preact_resnet18", 11_217_444),
                                            ("cskd_preact_resnet10", 4_946_724)])
def test_reference_parameter_counts(name, expected):
    model = models.build(name, num_classes=100)
    assert registry.parameter_count(model) == expected


def test_reference_layer_order():
    model = models.build("cskd_preact_resnet18", num_classes=10, width=4)
    names = [layer.name for layer in model.layers]
    # (a) the stem is conv -> BN -> ReLU
    assert names[1:4] == ["stem_conv", "stem_bn", "stem_relu"]
    # (b) nothing between the last residual sum and the pooling
    assert names[names.index("s4b2_add") + 1:names.index("global_pool")] == ["stage4"]
    # (c) the identity shortcut of a same-shape block is the pre-activated input
    add = model.get_layer("s1b2_add")
    shortcut_source = add._inbound_nodes[0].input_tensors[1]._keras_history.operation
    assert shortcut_source.name == "s1b2_relu1"
    # Strided 3x3 convolutions pad one pixel on every side, as PyTorch's padding=1.
    assert model.get_layer("s2b1_conv1_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("s2b1_conv1").padding == "valid"


def _kernel_std(layer):
    return float(np.std(keras.ops.convert_to_numpy(layer.kernel)))


def test_torch_init_matches_pytorch_default_std():
    keras.utils.set_random_seed(0)
    model = models.build("cskd_preact_resnet18", num_classes=100, init="torch")
    for name in ("stem_conv", "s1b1_conv1", "s3b2_conv2", "s4b1_shortcut_conv", "classifier"):
        layer = model.get_layer(name)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        fan_in = int(np.prod(kernel.shape[:-1]))
        expected = 1.0 / math.sqrt(3 * fan_in)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        # Sampling error of a std estimate from n draws is about std / sqrt(2n).
        tolerance = 4 * expected / math.sqrt(2 * kernel.size)
        assert abs(kernel.std() - expected) < tolerance, name
        assert np.abs(kernel).max() <= 1.0 / math.sqrt(fan_in)
    bias = keras.ops.convert_to_numpy(model.get_layer("classifier").bias)
    assert np.abs(bias).max() <= 1.0 / math.sqrt(512) and np.abs(bias).max() > 0
    bn = model.get_layer("s2b1_bn1")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.gamma), 1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.beta), 0.0)


def test_he_normal_is_the_default_and_larger():
    keras.utils.set_random_seed(0)
    default = models.build("cskd_preact_resnet18", num_classes=100)
    torch_init = models.build("cskd_preact_resnet18", num_classes=100, init="torch")
    layer = "s3b2_conv2"
    ratio = _kernel_std(default.get_layer(layer)) / _kernel_std(torch_init.get_layer(layer))
    # He-normal (truncated) std sqrt(2/fan_in) * 0.88 against 1/sqrt(3 fan_in): about 2.15.
    assert 1.9 < ratio < 2.5


def test_imagenet_resnet_torch_init_uses_fan_out():
    keras.utils.set_random_seed(0)
    model = models.build("resnet18", num_classes=10, input_shape=(32, 32, 3), init="torch")
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
                and layer.kernel.shape[:2] == (3, 3) and layer.kernel.shape[-1] == 256)
    kh, kw, _, out = conv.kernel.shape
    expected = math.sqrt(2.0 / (kh * kw * out))  # torchvision: kaiming_normal_(fan_out)
    assert abs(_kernel_std(conv) - expected) < 0.05 * expected


@pytest.mark.parametrize("name, conv_name, fan", [
    ("resnet50", "s3b1_conv2", "out"),  # torchvision ResNet: kaiming_normal_(fan_out)
    ("resnet101", "s3b5_conv3", "out"),
    ("densenet121", "d3l10_conv2", "in"),  # torchvision DenseNet: kaiming_normal_ (fan_in)
])
def test_224px_torch_init_follows_torchvision(name, conv_name, fan):
    keras.utils.set_random_seed(0)
    model = models.build(name, num_classes=10, input_shape=(32, 32, 3), width=16, init="torch")
    kh, kw, fan_in_channels, out = model.get_layer(conv_name).kernel.shape
    expected = math.sqrt(2.0 / (kh * kw * (out if fan == "out" else fan_in_channels)))
    assert abs(_kernel_std(model.get_layer(conv_name)) - expected) < 0.05 * expected
    bn = model.get_layer("stem_bn")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.gamma), 1.0)
    bias = keras.ops.convert_to_numpy(model.get_layer("classifier").bias)
    if name == "densenet121":  # torchvision's DenseNet zeroes the classifier bias
        np.testing.assert_array_equal(bias, 0.0)
    else:  # nn.Linear's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        fan_in = model.get_layer("classifier").kernel.shape[0]
        assert 0 < np.abs(bias).max() <= 1.0 / math.sqrt(fan_in)


def test_unknown_init_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown init 'xavier'; use one of: he_normal, torch"):
        models.build("cskd_preact_resnet10", num_classes=10, init="xavier")

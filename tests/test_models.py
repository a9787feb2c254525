"""Tests of the backbone registry (cskd_tf.models).

Every registered model is built once per module at 1000 classes on small
(32, 32, 3) inputs: parameter counts of these globally pooled conv nets do
not depend on the spatial size, and small maps keep building cheap. The
battery (forward contract, stages, initialisers) runs over whatever the
registry holds, so a new backbone module is tested without editing this file;
test_a_backbone_is_one_new_file shows it with a throwaway module.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from cskd_tf import models
from cskd_tf.errors import ModelError
from cskd_tf.registry import MODELS

SMALL_SHAPE = (32, 32, 3)

# Trainable parameters at 1000 classes (exact values), measured against the reference
# implementations; a backbone added later has no reference count until someone measures
# one. Those of resnet18, resnet50, resnet101, densenet121 and resnext101_32x4d are
# torchvision 0.29's, measured with sum(p.numel() for p in net.parameters())
# (ResNeXt-101 32x4d as its ResNet(Bottleneck, [3, 4, 23, 3], groups=32,
# width_per_group=4)); resnet10's is the CS-KD code's ResNet(BasicBlock, [1, 1, 1, 1])
# (models/resnet.py), measured the same way.
EXPECTED_1000 = {
    "cskd_preact_resnet10": 5_408_424,  # 4,946,724 at 100 classes, as the CS-KD code's
    "cskd_preact_resnet18": 11_679_144,  # 11,217,444 at 100 classes, as the CS-KD code's
    "preact_resnet10": 5_409_320,
    "preact_resnet18": 11_680_040,
    "densenet121_cifar": 7_971_048,
    "resnet10": 5_418_792,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "densenet121": 7_978_856,
    "resnext101_32x4d": 44_177_704,
    "keras_resnet50": 25_583_592,  # keras.applications v1: conv biases
    "keras_resnet101": 44_601_832,
    "keras_densenet121": 7_978_856,
}
# The standard feature width of the measured backbones (the battery checks any backbone's
# features against its own stage4 instead).
FEATURE_DIMS = {"preact_resnet18": 512, "densenet121_cifar": 1024, "resnet50": 2048,
                "densenet121": 1024, "resnext101_32x4d": 2048, "keras_resnet50": 2048}



@pytest.fixture(scope="module")
def built():
    keras.utils.set_random_seed(0)
    return {name: models.build(name, 1000, input_shape=SMALL_SHAPE) for name in models.available()}


def _images(shape, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def densenet_bc_params(growth, blocks, num_classes, in_channels=3):
    """Hand count of DenseNet-BC with a 3x3 stem of 2k channels, bottleneck 4k."""
    c = 2 * growth
    total = in_channels * 9 * c
    for i, n in enumerate(blocks):
        for _ in range(n):
            # BN(c) + 1x1 conv c->4k + BN(4k) + 3x3 conv 4k->k
            total += 2 * c + c * 4 * growth + 2 * 4 * growth + 4 * growth * 9 * growth
            c += growth
        if i < len(blocks) - 1:
            total += 2 * c + c * (c // 2)  # BN + 1x1 compression conv
            c //= 2
    return total + 2 * c + (c + 1) * num_classes  # final BN + classifier


def test_registry_holds_the_measured_models():
    assert set(EXPECTED_1000) <= set(models.available())
    assert models.available() == MODELS.names()
    assert models.default_input_shape("preact_resnet18") == (32, 32, 3)
    assert models.default_input_shape("densenet121_cifar") == (32, 32, 3)
    assert models.default_input_shape("resnet50") == (224, 224, 3)


@pytest.mark.parametrize("name", sorted(EXPECTED_1000))
def test_parameter_counts_at_1000_classes(built, name):
    assert models.parameter_count(built[name]) == EXPECTED_1000[name]


def test_preact_resnet18_matches_pytorch_reference_at_100_classes():
    model = models.build("preact_resnet18", 100, input_shape=(8, 8, 3))
    count = models.parameter_count(model)
    assert count == 11_218_340
    assert abs(count / 11_220_132 - 1) < 0.01


def test_densenet121_cifar_matches_hand_formula(built):
    assert densenet_bc_params(32, (6, 12, 24, 16), 1000) == models.parameter_count(
        built["densenet121_cifar"]
    )
    at_100 = densenet_bc_params(32, (6, 12, 24, 16), 100)
    assert at_100 == 7_048_548
    assert abs(at_100 / 7_050_000 - 1) < 0.01  # CS-KD repo: "about 7.05M"


@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
def test_standard_feature_widths(built, name):
    assert built[name].get_layer("features").output.shape[-1] == FEATURE_DIMS[name]


# ----------------------------------------------------------------- the battery, per backbone
def check_forward(model, num_classes=1000, shape=SMALL_SHAPE):
    out = model(_images(shape), training=False)
    assert set(out) == {"logits", "features"}
    assert tuple(out["logits"].shape) == (2, num_classes)
    assert tuple(out["features"].shape) == (2, model.get_layer("stage4").output.shape[-1])
    assert out["logits"].dtype == "float32" and out["features"].dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out["logits"])))


def check_stages(model):
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    stages = [model.get_layer(f"stage{k}") for k in range(1, 5)]
    assert "stage5" not in order
    positions = [order[s.name] for s in stages]
    assert positions == sorted(positions) and len(set(positions)) == 4
    shapes = [tuple(s.output.shape) for s in stages]
    assert all(a[1] >= b[1] and a[3] <= b[3] for a, b in zip(shapes, shapes[1:]))
    assert shapes[0][1] > shapes[-1][1]
    assert order["features"] < order["classifier"]
    classifier = model.get_layer("classifier")
    assert isinstance(classifier, layers.Dense) and classifier.use_bias


def check_init(model):
    convs = [layer for layer in model.layers if isinstance(layer, (layers.Conv2D, layers.Dense))]
    assert convs
    for layer in convs:
        assert isinstance(layer.kernel_initializer, keras.initializers.HeNormal), layer.name
        assert layer.kernel_regularizer is None and layer.bias_regularizer is None


def check_small_inputs(name):
    """Builds and trains-mode runs at the smallest input the backbone declares."""
    spec = models.get_spec(name)
    width = 0 if spec.standard_width is None else 4
    size = max(spec.min_size, 8)
    model = models.build(name, 10, input_shape=(size, size, 1), width=width)
    out = model(_images((size, size, 1)), training=True)
    assert tuple(out["logits"].shape) == (2, 10)


@pytest.mark.parametrize("name", models.available())
def test_forward_shapes_and_dtypes(built, name):
    check_forward(built[name])


@pytest.mark.parametrize("name", models.available())
def test_stage_layers_in_increasing_depth(built, name):
    check_stages(built[name])


@pytest.mark.parametrize("name", models.available())
def test_he_normal_init_and_no_regularizers(built, name):
    check_init(built[name])


THROWAWAY_BACKBONE = '''
"""A throwaway backbone written by tests/test_models.py."""
from keras import layers

from cskd_tf.models.registry import register


@register("throwaway_net", style="cifar", standard_width=4, display_name="Throwaway-Net")
def throwaway_net(inputs, width, depth=4):
    """Four strided convolutions."""
    x = inputs
    for k in range(1, depth + 1):
        x = layers.Conv2D(width * k, 3, strides=2 if k > 1 else 1, padding="same",
                          kernel_initializer="he_normal", name=f"stage{k}")(x)
    return layers.GlobalAveragePooling2D()(x)
'''


def test_a_backbone_is_one_new_file(tmp_path, monkeypatch):
    """One new module in the package (here a directory added to its __path__) is found by
    discovery, listed by available() and passes the battery."""
    (tmp_path / "throwaway_net.py").write_text(THROWAWAY_BACKBONE)
    doc = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    assert "## Adding a backbone (one file)" in doc and "one_new_file" in doc
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    try:
        assert "throwaway_net" not in models.available()
        MODELS.discover()
        assert "throwaway_net" in models.available()
        assert "throwaway_net" in MODELS.names(declared=True)  # read without importing too
        entry = MODELS.get("throwaway_net")
        assert entry.display_name == "Throwaway-Net" and entry.defaults == {"depth": 4}
        model = models.build("throwaway_net", 1000, input_shape=SMALL_SHAPE)
        check_forward(model)
        check_stages(model)
        check_init(model)
        check_small_inputs("throwaway_net")
    finally:
        MODELS.remove("throwaway_net")
        sys.modules.pop("cskd_tf.models.throwaway_net", None)


def test_features_are_pooled_stage4():
    model = models.build("preact_resnet10", 5, input_shape=(8, 8, 3), width=8)
    probe = keras.Model(model.input, [model.get_layer("stage4").output,
                                      model.get_layer("features").output])
    stage4, features = probe(_images((8, 8, 3)), training=False)
    np.testing.assert_allclose(np.mean(stage4, axis=(1, 2)), features, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in models.available()
                                  if models.get_spec(n).style == "cifar"])
def test_cifar_style_on_one_channel_8x8(name):
    width = 4 if name == "densenet121_cifar" else 8
    model = models.build(name, 10, input_shape=(8, 8, 1), width=width)
    out = model(_images((8, 8, 1)), training=True)
    assert tuple(out["logits"].shape) == (2, 10)
    assert model.get_layer("stage1").output.shape[-1] < model.get_layer("stage4").output.shape[-1]


def test_width_scales_cifar_resnets():
    model = models.build("preact_resnet18", 10, input_shape=(8, 8, 3), width=16)
    assert model.get_layer("stage1").output.shape[-1] == 16
    assert model.get_layer("features").output.shape[-1] == 128
    assert models.parameter_count(model) < 800_000


def test_cosine_head_bounded_by_scale():
    model = models.build("preact_resnet10", 7, input_shape=(8, 8, 3), width=8, head="cosine",
                         scale=4.0)
    classifier = model.get_layer("classifier")
    assert isinstance(classifier, models.CosineClassifier)
    assert not classifier.scale.trainable and float(classifier.scale.numpy()) == 4.0
    assert all(w is not classifier.scale for w in model.trainable_weights)
    logits = keras.ops.convert_to_numpy(model(_images((8, 8, 3), batch=4))["logits"])
    assert np.all(np.abs(logits) <= 4.0 + 1e-5) and np.abs(logits).max() > 0
    classifier.scale.assign(30.0)  # what AdaCos does
    scaled = keras.ops.convert_to_numpy(model(_images((8, 8, 3), batch=4))["logits"])
    np.testing.assert_allclose(scaled, logits * 7.5, rtol=1e-4, atol=1e-5)


def test_config_round_trip_with_cosine_head():
    model = models.build("preact_resnet10", 6, input_shape=(8, 8, 3), width=8, head="cosine",
                         scale=2.0)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = _images((8, 8, 3))
    a, b = model(x, training=False), clone(x, training=False)
    for key in ("logits", "features"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6)
    assert isinstance(clone.get_layer("classifier"), models.CosineClassifier)
    assert clone.get_layer("stage3") is not None


@pytest.mark.parametrize("head", models.HEADS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", ["preact_resnet10", "resnet10"])
def test_float32_outputs_under_mixed_precision(name, policy, head):
    """The body computes in 16 bits; the head's logits and features are float32 (the
    softmax/KL of every method and Recall@k read them), and so are BN's statistics.

    Every other backbone ends in the same head (registry.build -> heads.attach_head)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = models.build(name, 5, input_shape=(16, 16, 3), width=8, head=head)
        out = model(_images((16, 16, 3)), training=True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("stage2").compute_dtype == policy.split("_")[1]
    assert out["logits"].dtype == "float32" and out["features"].dtype == "float32"
    assert model.get_layer("classifier").compute_dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out["logits"])))
    batch_norms = [layer for layer in model.layers
                   if isinstance(layer, layers.BatchNormalization)]
    assert batch_norms and all(v.dtype == "float32" for bn in batch_norms
                               for v in (bn.moving_mean, bn.moving_variance))
    assert keras.config.dtype_policy().name == previous.name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ModelError) as info:
        models.build("resnet19", 10)
    message = str(info.value)
    assert "\n" not in message and "resnet19" in message
    assert all(name in message for name in models.available())


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(name="preact_resnet18", num_classes=0), "num_classes"),
        (dict(name="preact_resnet18", num_classes=10, input_shape=(4, 4, 3)), "at least 8x8"),
        (dict(name="densenet121", num_classes=10, input_shape=(16, 16, 3)), "at least 32x32"),
        (dict(name="preact_resnet18", num_classes=10, input_shape=(32, 32)), "input_shape"),
        (dict(name="keras_resnet50", num_classes=10, width=16), "width"),
        (dict(name="preact_resnet18", num_classes=10, width=-1), "width"),
        (dict(name="preact_resnet18", num_classes=10, head="arcface"), "linear, cosine"),
        (dict(name="preact_resnet18", num_classes=10, dropout=0.5), "dropout"),
        (dict(name="preact_resnet18", num_classes=10, head="cosine", scale=0), "scale"),
    ],
)
def test_bad_arguments_raise_model_error(kwargs, fragment):
    with pytest.raises(ModelError) as info:
        models.build(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_register_decorator():
    @models.register("tiny_test_net", style="cifar", standard_width=4)
    def tiny(inputs, width, depth=1):
        """A throwaway test backbone."""
        x = inputs
        for k in range(1, depth + 1):
            x = layers.Conv2D(width, 3, padding="same", name=f"stage{k}")(x)
        return layers.GlobalAveragePooling2D()(x)

    try:
        assert "tiny_test_net" in models.available()
        model = models.build("tiny_test_net", 3, input_shape=(8, 8, 1), depth=2)
        assert tuple(model.get_layer("stage2").output.shape) == (None, 8, 8, 4)
        assert models.get_spec("tiny_test_net").summary == "A throwaway test backbone."
        models.register("tiny_test_net", style="cifar", standard_width=4)(tiny)  # a reload
        with pytest.raises(ModelError, match="already registered by .*tiny; register"):
            models.register("tiny_test_net")(lambda inputs, width: inputs)
    finally:
        models.MODELS.remove("tiny_test_net")

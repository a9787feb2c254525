"""Two training steps of the CS-KD reference code, reproduced by ``CSKDModel.fit``.

``tests/data/cskd_golden_step_w2_torch.npz`` was made by running the reference code's
own step (github.com/alinlab/cs-kd, ``train.py``: its ``optimizer``, ``criterion``,
``KDLoss``, ``kdloss`` and ``train()`` executed unchanged, with ``args`` at train.py's
defaults lr 0.1, weight decay 1e-4, T 4, λ 1) on the width-2, 10-class ``CIFAR_ResNet18``
starting from the random weights and BN statistics of
``cskd_preact_resnet18_w2_torch.npz``, for two SGD steps on one fixed batch of 8 anchors
(32x32) with 8 same-class partners, once with ``-cls`` (CS-KD) and once without (CE).
Pixels are stored as uint8 and fed as (u8 − 128) / 64, exact in float32 on both sides.
The file holds, per method, the loss terms of each step, every weight and BN buffer after
the second step (``<method>/final``, flattened in the order of the ``init/`` keys) and
the BN running statistics after each forward pass (``<method>/passes``).

What the reference's CS-KD step does, and what is compared:

* loss = mean CE on the anchors' logits + λ · T² · Σ KL(p_T(partner) ‖ p_T(anchor)) / B,
  the partner pass under ``no_grad`` — compared per step to 1e-5;
* ``optim.SGD(momentum=0.9, weight_decay=1e-4)``: d = g + wd·θ, buf = 0.9·buf + d,
  θ −= lr·buf (the project: wd/2·Σθ² in the objective, Keras SGD's momentum) —
  every weight compared after two steps (the second step uses the momentum buffer);
* both passes in training mode: the anchor pass first, then the partner pass, each
  with its own batch statistics, each moving the running statistics by PyTorch's rule
  r ← 0.9·r + 0.1·μ_B and v ← 0.9·v + 0.1·n/(n−1)·σ²_B (the unbiased batch variance,
  n = batch × H × W per channel) — the running statistics compared after each step to
  ~1e-6 relative. The order matters: after a step r = 0.81·r₀ + 0.09·anchor + 0.1·partner,
  so the partner pass first would leave 0.01·(anchor − partner) batch statistics per step
  (up to ~2e-3 here); the biased variance would leave 0.1·σ²_B/(n − 1) per pass (up to
  ~1.5e-3). CE has one pass per step.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cskd_tf import losses, models
from cskd_tf.models import CSKDModel

from test_reference_backbones import _keras_name, _load_torch_weights

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "cskd_golden_step_w2_torch.npz")
LR, MOMENTUM, WEIGHT_DECAY, TEMPERATURE, LAMBDA = 0.1, 0.9, 1e-4, 4.0, 1.0
STEPS = 2


def build_compiled(method_name):
    """The CSKDModel under test, compiled as the project trains: the one place to adapt
    when the construction API changes (method objects, compile(loss=...))."""
    backbone = models.build("cskd_preact_resnet18", num_classes=10, width=2, init="torch")
    method = (losses.CSKD(temperature=TEMPERATURE, weight=LAMBDA) if method_name == "cskd"
              else losses.CrossEntropy())
    model = CSKDModel(backbone, method=method, weight_decay=WEIGHT_DECAY)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM),
                  jit_compile=False)
    return model


def _pixels(u8):
    return (u8.astype(np.float32) - 128.0) / 64.0


def _golden():
    return np.load(GOLDEN)


def _unflatten(golden, vector):
    out, offset = {}, 0
    for key in (k for k in golden.files if k.startswith("init/")):
        shape = golden[key].shape
        size = int(np.prod(shape))
        out[key[len("init/"):]] = vector[offset:offset + size].reshape(shape)
        offset += size
    assert offset == vector.size
    return out


def _torch_layout_state(backbone, names):
    """The backbone's weights under the reference's state_dict names and layouts."""
    out = {}
    for key in names:
        prefix, leaf = key.rsplit(".", 1)
        layer = backbone.get_layer(_keras_name(prefix))
        values = [keras.ops.convert_to_numpy(v) for v in layer.weights]
        if leaf in ("weight", "bias", "running_mean", "running_var") and len(values) == 4:
            value = values[("weight", "bias", "running_mean", "running_var").index(leaf)]
        elif values[0].ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
            value = values[0].transpose(3, 2, 0, 1)
        else:
            value = values[0].T if leaf == "weight" else values[1]
        out[key] = value
    return out


_RUNS = {}


def _trained(method_name):
    """(model, history, initial state, BN running statistics after each step) after two fit
    epochs of the golden batch (cached)."""
    if method_name not in _RUNS:
        keras.config.set_dtype_policy("float32")
        golden = _golden()
        model = build_compiled(method_name)
        state = {k[len("init/"):]: golden[k] for k in golden.files if k.startswith("init/")}
        _load_torch_weights(model.backbone, state)
        anchors = _pixels(golden["anchors"]).transpose(0, 2, 3, 1)
        labels = golden["labels"]
        if method_name == "cskd":  # the pair pipeline's element: ((anchor, partner), label)
            partners = _pixels(golden["partners"]).transpose(0, 2, 3, 1)
            batch = ((anchors, partners), labels)
        else:  # the single-view pipeline's element: (image, label)
            batch = (anchors, labels)
        ds = tf.data.Dataset.from_tensors(batch)
        snapshots = []  # the BN running statistics after each step
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: snapshots.append(
                _bn_state(model.backbone, golden)))
        # One batch per epoch: the per-epoch logs are the per-step loss terms.
        history = model.fit(ds, epochs=STEPS, verbose=0, shuffle=False, callbacks=[record])
        _RUNS[method_name] = model, history.history, state, snapshots
    return _RUNS[method_name]


@pytest.mark.parametrize("method_name", ["cskd", "ce"])
def test_loss_terms_match_reference_per_step(method_name):
    golden = _golden()
    _, history, _, _ = _trained(method_name)
    terms = ("loss", "ce", "cls") if method_name == "cskd" else ("loss", "ce")
    for term in terms:
        np.testing.assert_allclose(history[term], golden[f"{method_name}/{term}"], rtol=0,
                                   atol=1e-5, err_msg=term)


@pytest.mark.parametrize("method_name", ["cskd", "ce"])
def test_weights_after_two_steps_match_reference(method_name):
    golden = _golden()
    model, _, init, _ = _trained(method_name)
    expected = _unflatten(golden, golden[f"{method_name}/final"])
    weights = [k for k in expected if "running_" not in k]
    actual = _torch_layout_state(model.backbone, weights)
    flat = np.concatenate([actual[k].ravel() for k in weights])
    reference = np.concatenate([expected[k].ravel() for k in weights])
    # All weights together: float32 rounding of two steps' gradients leaves ~5e-7 of ‖θ‖; a
    # doubled weight decay (wd·Σθ² in the objective) would leave ~3e-5 (lr·wd·(θ₀ + 1.9·θ₁)).
    error = np.linalg.norm(flat - reference) / np.linalg.norm(reference)
    assert error < 2e-6, f"‖θ − θ_ref‖ / ‖θ_ref‖ = {error:.2e}"
    for key in weights:
        # Each tensor alone, to name the one that is off; its rounding is up to ~3e-6.
        scale = np.abs(expected[key]).max()
        error = np.abs(actual[key] - expected[key]).max() / scale
        assert error < 1e-5, f"{key}: max |Δ| / max |θ_ref| = {error:.2e}"
        # The two steps moved this weight by far more than the tolerance.
        assert np.abs(expected[key] - init[key]).max() / scale > 1e-4, key


def _bn_state(backbone, golden):
    keys = list(golden["bn_keys"])
    state = _torch_layout_state(backbone, keys)
    return np.concatenate([state[k].ravel() for k in keys])


@pytest.mark.parametrize("method_name", ["cskd", "ce"])
def test_running_statistics_equal_reference_after_each_step(method_name):
    golden = _golden()
    _, _, _, snapshots = _trained(method_name)
    passes = golden[f"{method_name}/passes"]
    per_step = len(passes) // STEPS  # CS-KD: anchor and partner passes; CE: one pass
    keys, sizes = list(golden["bn_keys"]), golden["bn_sizes"]
    for step, actual in enumerate(snapshots):
        expected = passes[(step + 1) * per_step - 1]
        for key, a, e in zip(keys, np.split(actual, np.cumsum(sizes)[:-1]),
                             np.split(expected, np.cumsum(sizes)[:-1])):
            # float32 rounding of two steps: ~1e-7 relative. The partner pass first, or the
            # biased variance, would be off by up to ~2e-3.
            np.testing.assert_allclose(a, e, rtol=1e-6, atol=5e-6,
                                       err_msg=f"{key} after step {step + 1}")
    final = _unflatten(golden, golden[f"{method_name}/final"])
    np.testing.assert_allclose(snapshots[-1], np.concatenate([final[k].ravel() for k in keys]),
                               rtol=1e-6, atol=5e-6)

"""The training methods of the paper's tables (cskd_tf/losses/methods/*).

* each loss against an independent numpy implementation of its formula, on fixed logits
  (a stub model whose logits are its inputs);
* gradient flow: detached partner / second view / teacher sides, DDGSD's per-direction
  detachment, BYOT's deepest head trained by (1 − α)·CE only, the KD teacher frozen;
* every method trains on tiny digits with preact_resnet18 (graph mode), BYOT (which reaches
  into the backbone's stages) also with densenet121_cifar (eagerly: tracing DenseNet-121 costs more
  than the few steps), and cskd-train runs a BYOT
  teacher and a KD + CS-KD student as subprocesses;
* KD bad input, the SavedModel teacher, and the paper-cell configs (configs/paper.py);
* structure: BYOT's bottleneck branches reach the deepest stage, Virtual-softmax's classifier
  has no bias.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import console_script
from cskd_tf import losses
from cskd_tf.config import default_config, validate
from cskd_tf.errors import ConfigError, ModelError
from cskd_tf.losses.methods import _mixing, adacos, byot, virtual_softmax
from cskd_tf.training import teacher as teacher_lib

# The training battery runs every registered method (a new method module joins it without
# an edit here) but CS-KD and CE, which tests/test_training.py trains end to end.
TRAINED_ELSEWHERE = ("cskd", "ce")
METHODS = tuple(n for n in losses.METHODS.names() if n not in TRAINED_ELSEWHERE)
# DenseNet-121 runs eagerly at ~20 s a method, so it trains only BYOT, the method that
# reaches into the backbone's structure (a head on every stage); the others see the pooled
# features or the logits only, as on the ResNet.
DENSENET_METHODS = ("byot",)
ROOT = os.path.join(os.path.dirname(__file__), "..")


# ------------------------------------------------------------------------ numpy references
def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))


def np_ce(logits, labels):
    return float(-np.mean(log_softmax(logits)[np.arange(len(labels)), labels]))


def np_kl(student, teacher, T):
    """mean_batch KL(softmax(teacher/T) ‖ softmax(student/T))."""
    log_q, log_p = log_softmax(np.asarray(teacher) / T), log_softmax(np.asarray(student) / T)
    return float(np.mean(np.sum(np.exp(log_q) * (log_q - log_p), axis=-1)))


def np_mix(x, lam, perm):
    return lam * x + (1 - lam) * x[perm]


def np_mixup_ce(logits, labels, lam, perm):
    lp = log_softmax(logits)
    rows = np.arange(len(labels))
    return float(np.mean(-lam * lp[rows, labels] - (1 - lam) * lp[rows, labels[perm]]))


class StubModel:
    """forward(x) = {"logits": x @ W, "features": x}; W = I makes the logits the input."""

    def __init__(self, num_classes):
        self.kernel = tf.Variable(tf.eye(num_classes))

    def forward(self, x, training=False):
        x = tf.cast(x, tf.float32)
        return {"logits": x @ self.kernel, "features": x}


def method_config(name, **fields):
    config = default_config()
    config.method = name
    config.update(fields)
    return config


def fixed_logits(*shape, scale=3.0, seed=0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


LABELS = np.array([0, 3, 1, 4, 2, 2, 0, 1], np.int64)


def run_method(name, images, labels=LABELS, model=None, **fields):
    method = losses.get_method(name, method_config(name, **fields))
    model = model or StubModel(images[0].shape[-1])
    method.build(model)
    images = tuple(tf.constant(x) for x in images)
    outputs, targets = method.passes(model, images, tf.constant(labels))
    total, terms = method.loss(model, tf.constant(labels), outputs, targets,
                               lambda y, z, w=None: losses.cross_entropy(y, z, sample_weight=w))
    logits = outputs["logits"]
    return method, float(total), logits, {k: float(v) for k, v in terms.items()}, targets


# --------------------------------------------------------------------- losses against numpy
def test_label_smoothing_matches_numpy():
    z = fixed_logits(8, 5)
    _, total, _, terms, _ = run_method("label_smoothing", (z,), label_smoothing=dict(epsilon=0.2))
    q = np.full((8, 5), 0.2 / 5) + 0.8 * np.eye(5)[LABELS]
    assert total == pytest.approx(float(np.mean(-np.sum(q * log_softmax(z), -1))), rel=1e-5)
    assert terms["ce"] == pytest.approx(np_ce(z, LABELS), rel=1e-5)


def test_max_entropy_matches_numpy():
    z = fixed_logits(8, 5)
    _, total, _, terms, _ = run_method("max_entropy", (z,), max_entropy=dict(beta=0.3))
    entropy = float(np.mean(-np.sum(softmax(z) * log_softmax(z), -1)))
    assert terms["entropy"] == pytest.approx(entropy, rel=1e-5)
    assert total == pytest.approx(np_ce(z, LABELS) - 0.3 * entropy, rel=1e-5)


def test_cskd_e_matches_numpy():
    z, zp, zv = fixed_logits(8, 5, seed=0), fixed_logits(8, 5, seed=1), fixed_logits(8, 5, seed=2)
    _, total, _, terms, _ = run_method("cskd_e", (z, zp, zv), temperature=3.0, lambda_cls=2.0,
                                       cskd_e=dict(lambda_sample=0.5))
    want = np_ce(z, LABELS) + 2.0 * 9 * np_kl(z, zp, 3.0) + 0.5 * 9 * np_kl(z, zv, 3.0)
    assert total == pytest.approx(want, rel=1e-5)
    assert terms["sample"] == pytest.approx(9 * np_kl(z, zv, 3.0), rel=1e-5)


def np_adacos_scale(cosine, labels, s):
    rows = np.arange(len(labels))
    non_target = np.ones_like(cosine, bool)
    non_target[rows, labels] = False
    b_avg = np.exp(s * cosine.astype(np.float64))[non_target].sum() / len(labels)
    theta = np.sort(np.arccos(cosine[rows, labels].astype(np.float64)))
    theta_med = theta[(len(theta) - 1) // 2]  # torch.median: the lower median
    return np.log(b_avg) / np.cos(min(np.pi / 4, theta_med))


@pytest.mark.parametrize("batch", [7, 8])
def test_adacos_scale_matches_numpy(batch):
    rng = np.random.default_rng(batch)
    cosine = rng.uniform(-0.6, 0.9, size=(batch, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=batch)
    got = float(adacos.adaptive_scale(cosine, labels, 3.1))
    assert got == pytest.approx(np_adacos_scale(cosine, labels, 3.1), rel=1e-4)


def tiny_model(method_name, num_classes=10, **fields):
    from cskd_tf.training import trainer

    config = method_config(method_name, model="preact_resnet18", model_width=4, **fields)
    return trainer.build_model(config, num_classes, (8, 8, 1), (0.5,), (0.5,))


def test_adacos_updates_the_head_scale_and_uses_it():
    model = tiny_model("adacos")
    head = model.backbone.get_layer("classifier")
    s0 = np.sqrt(2) * np.log(9)
    assert float(head.scale.numpy()) == pytest.approx(s0, rel=1e-6)
    images = tf.random.uniform((8, 8, 8, 1), seed=1)
    labels = tf.constant(LABELS)
    cosine = model.forward(images, training=True)["logits"].numpy() / s0
    _, logits, terms = model.method.objective(model, (images,), labels)
    s1 = np_adacos_scale(cosine, LABELS, s0)
    assert float(head.scale.numpy()) == pytest.approx(s1, rel=1e-4)
    assert terms["scale"].numpy() == pytest.approx(s1, rel=1e-4)
    np.testing.assert_allclose(logits.numpy(), s1 * cosine, rtol=1e-4, atol=1e-5)
    # Evaluation uses the adapted scale.
    np.testing.assert_allclose(model(images).numpy() / s1,
                               model.forward(images)["logits"].numpy() / s1, rtol=1e-6)
    with pytest.raises(ModelError, match="at least 3 classes"):
        tiny_model("adacos", num_classes=2)


@pytest.mark.parametrize("eval_scale", ["adaptive", "unit"])
def test_adacos_eval_scale_decides_the_inference_logits(eval_scale):
    model = tiny_model("adacos", adacos=dict(eval_scale=eval_scale))
    head = model.backbone.get_layer("classifier")
    images = tf.random.uniform((8, 8, 8, 1), seed=1)
    model.method.objective(model, (images,), tf.constant(LABELS), {})  # s adapts
    s = float(head.scale.numpy())
    trained = model.forward(images, training=True)["logits"].numpy()  # s·cos θ while training
    features = model.forward(images)["features"].numpy()
    kernel = head.kernel.numpy()
    cosine = ((features / np.linalg.norm(features, axis=1, keepdims=True))
              @ (kernel / np.linalg.norm(kernel, axis=0, keepdims=True)))
    want = cosine if eval_scale == "unit" else s * cosine
    np.testing.assert_allclose(model(images).numpy(), want, rtol=1e-4, atol=1e-5)
    assert abs(s - 1.0) > 0.5 and np.abs(trained).max() > 0
    # The flag is saved with the head, so a reloaded model evaluates the same way.
    assert head.get_config()["unit_scale_at_inference"] == (eval_scale == "unit")


def test_virtual_softmax_matches_numpy():
    z, feats = fixed_logits(8, 5), fixed_logits(8, 6, seed=1, scale=1.0)
    kernel = fixed_logits(6, 5, seed=2, scale=0.5)
    got = float(virtual_softmax.virtual_softmax_loss(z, feats, kernel, LABELS))
    virtual = np.linalg.norm(kernel, axis=0)[LABELS] * np.linalg.norm(feats, axis=1)
    augmented = np.concatenate([z, virtual[:, None]], axis=1)
    assert got == pytest.approx(np_ce(augmented, LABELS), rel=1e-5)
    assert got > np_ce(z, LABELS)  # the virtual class only adds mass to the denominator


@pytest.mark.parametrize("T, lam", [(1.0, 1.0), (3.0, 1.0), (3.0, 1 / (5 * 9))])
def test_ddgsd_matches_numpy_and_each_kl_direction_detaches_its_teacher(T, lam):
    # lam = 1/(C·T²): youngerous/ddgsd-pytorch's class-averaged, T²-free KL (docs/baselines.md).
    z1, z2 = fixed_logits(8, 5, seed=0), fixed_logits(8, 5, seed=1)
    mu = 0.5
    method = losses.get_method("ddgsd", method_config("ddgsd", ddgsd=dict(
        mmd_weight=mu, temperature=T, kl_weight=lam)))
    model = StubModel(5)
    a, b = tf.constant(z1), tf.constant(z2)
    with tf.GradientTape() as tape:
        tape.watch(a)
        total, _, terms = method.objective(model, (a, b), tf.constant(LABELS))
    mmd = float(np.sum((z1.mean(0) - z2.mean(0)) ** 2))
    kl = T * T * (np_kl(z1, z2, T) + np_kl(z2, z1, T))
    want = np_ce(z1, LABELS) + np_ce(z2, LABELS) + lam * kl + mu * mmd
    assert float(total) == pytest.approx(want, rel=1e-5)
    if lam != 1.0:  # youngerous's forward: mean over classes of the element-wise KL, no T²
        def class_mean_kl(student, teacher):
            log_q, log_p = log_softmax(teacher / T), log_softmax(student / T)
            return float(np.mean(np.exp(log_q) * (log_q - log_p)) * 5) / 5
        youngerous = class_mean_kl(z1, z2) + class_mean_kl(z2, z1)
        assert lam * kl == pytest.approx(youngerous, rel=1e-6)
    assert float(terms["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(terms["mmd"]) == pytest.approx(mmd, rel=1e-5)
    # d/dz1: CE (p1 − y) and T²·KL(p̃2 ‖ p1) at T, T·(p1ᵀ − p2ᵀ), both /B, plus the
    # MMD; nothing from KL(p̃1 ‖ p2), where z1 is the detached teacher.
    p1 = softmax(z1)
    p1t, p2t = softmax(z1 / T), softmax(z2 / T)
    grad = (((p1 - np.eye(5)[LABELS]) + lam * T * (p1t - p2t)) / 8
            + mu * 2 * (z1.mean(0) - z2.mean(0)) / 8)
    np.testing.assert_allclose(tape.gradient(total, a).numpy(), grad, rtol=1e-4, atol=1e-6)


def test_ddgsd_temperature_defaults_to_3_and_must_be_positive():
    assert default_config().ddgsd.temperature == 3.0
    with pytest.raises(ConfigError, match=r"config.ddgsd.temperature must be > 0 .*default is 3"):
        losses.get_method("ddgsd", method_config("ddgsd", ddgsd=dict(temperature=0.0)))


def np_byot(deep, deep_f, aux, labels, T, alpha, beta):
    """The BYOT objective written out, with the reference's masked, summed hint."""
    ce = np_ce(deep, labels)
    aux_ce = sum(np_ce(out["logits"], labels) for out in aux)
    aux_kd = T * T * sum(np_kl(out["logits"], deep, T) for out in aux)
    hint = sum(float(np.sum((out["features"] - deep_f) ** 2
                            * ((out["features"] > 0) | (deep_f > 0)))) for out in aux)
    return (1 - alpha) * (ce + aux_ce) + alpha * aux_kd + beta * hint, hint


def test_byot_loss_matches_numpy():
    deep, deep_f = fixed_logits(8, 5), fixed_logits(8, 6, seed=1)
    aux = [{"logits": fixed_logits(8, 5, seed=s), "features": fixed_logits(8, 6, seed=s + 10)}
           for s in (2, 3)]
    T, alpha, beta = 3.0, 0.3, 0.01
    total, terms = byot.byot_loss(deep, deep_f, aux, LABELS, T, alpha, beta)
    want, hint = np_byot(deep, deep_f, aux, LABELS, T, alpha, beta)
    assert float(total) == pytest.approx(want, rel=1e-5)
    assert float(terms["ce"]) == pytest.approx(np_ce(deep, LABELS), rel=1e-5)
    assert float(terms["hint"]) == pytest.approx(hint, rel=1e-5)
    # Signed features: the mask drops entries where both are <= 0 (here about a quarter).
    unmasked = sum(float(np.sum((out["features"] - deep_f) ** 2)) for out in aux)
    assert hint < 0.9 * unmasked
    # Summed, not averaged, over the batch: the same batch twice has twice the hint.
    twice = [{k: np.concatenate([v, v]) for k, v in out.items()} for out in aux]
    _, terms2 = byot.byot_loss(np.concatenate([deep, deep]), np.concatenate([deep_f, deep_f]),
                               twice, np.concatenate([LABELS, LABELS]), T, alpha, beta)
    assert float(terms2["hint"]) == pytest.approx(2 * hint, rel=1e-5)
    assert float(terms2["aux_kd"]) == pytest.approx(float(terms["aux_kd"]), rel=1e-5)
    # hint_scale (the replica count under a strategy) multiplies the hint only.
    scaled, terms3 = byot.byot_loss(deep, deep_f, aux, LABELS, T, alpha, beta, hint_scale=4.0)
    assert float(terms3["hint"]) == pytest.approx(4 * hint, rel=1e-5)
    assert float(scaled) == pytest.approx(want + 3 * beta * hint, rel=1e-5)


def test_byot_defaults_are_the_reference_codes():
    # luanyunteng/pytorch-be-your-own-teacher train.py: --temperature 3, --alpha 0.1, --beta 1e-6;
    # the official journal code's train.py: --loss_coefficient 0.3, --feature_loss_coefficient 0.03.
    config = default_config()
    assert config.byot.to_dict() == dict(temperature=3.0, alpha=None, beta=None,
                                         variant="iccv2019")
    assert losses.BYOT().get_config() == dict(temperature=3.0, alpha=0.1, beta=1e-6,
                                              variant="iccv2019")
    assert losses.BYOT(variant="official").get_config() == dict(
        temperature=3.0, alpha=0.3, beta=0.03, variant="official")


def np_byot_official(deep, deep_f, aux, labels, T, alpha, beta):
    """The official (journal) BYOT loss written out: deepest CE ×1, no T², ‖·‖_F hint skipping
    the last shallow head (the one just below the deepest)."""
    total = np_ce(deep, labels)
    for out in aux:
        total += (1 - alpha) * np_ce(out["logits"], labels) + alpha * np_kl(out["logits"], deep, T)
    hint = sum(float(np.linalg.norm(out["adapted"] - deep_f)) for out in aux[:-1])
    return total + beta * hint, hint


def test_byot_official_loss_matches_numpy_and_the_torch_transcription():
    # tests/data/byot_official_loss_torch.npz: the official train.py loss (lines 147-163 at
    # 47ca93b6) transcribed in PyTorch on fixed tensors, 4 heads deepest first, B 6, C 10; its
    # KD term is the soft-target CE, so its teacher-entropy constant is subtracted.
    golden = np.load(os.path.join(ROOT, "tests", "data", "byot_official_loss_torch.npz"))
    outs, feats, labels = golden["outputs"], golden["feats"], golden["labels"]
    T, alpha, beta = float(golden["T"]), float(golden["alpha"]), float(golden["beta"])
    # Official order deepest first (outs[1] = just below the deepest); ours shallowest first.
    aux = [{"logits": outs[k], "adapted": feats[k]} for k in (3, 2, 1)]
    total, terms = byot.byot_official_loss(outs[0], feats[0], aux, labels, T, alpha, beta)
    want = float(golden["loss"]) - float(golden["entropy_part"])
    assert float(total) == pytest.approx(want, abs=1e-5)
    np_total, hint = np_byot_official(outs[0], feats[0], aux, labels, T, alpha, beta)
    assert float(total) == pytest.approx(np_total, rel=1e-5)
    assert float(terms["hint"]) == pytest.approx(hint, rel=1e-5)
    assert float(terms["ce"]) == pytest.approx(np_ce(outs[0], labels), rel=1e-5)


# Two logical CPUs must be configured before TensorFlow starts: run in a fresh process.
MIRRORED_NORM_SCRIPT = """
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cskd_tf.losses.methods.byot import batch_distance
rng = np.random.default_rng(0)
f, t = (rng.normal(size=(8, 6)).astype(np.float32) for _ in range(2))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    w = tf.Variable(np.ones(6, np.float32))
def step(fs, ts):
    with tf.GradientTape() as tape:
        d = batch_distance(fs * w, ts)
        loss = d / strategy.num_replicas_in_sync  # as the train step scales the objective
    return d, tape.gradient(loss, w)
data = tf.data.Dataset.from_tensor_slices((f, t)).batch(8)
d, g = strategy.run(tf.function(step), next(iter(strategy.experimental_distribute_dataset(data))))
v = tf.Variable(np.ones(6, np.float32))
with tf.GradientTape() as tape:
    want = tf.norm(f * v - t)
error = np.abs(strategy.reduce("SUM", g, axis=None).numpy() - tape.gradient(want, v).numpy())
print([[float(x) for x in strategy.experimental_local_results(d)], float(want),
       float(error.max())])
"""


def test_byot_official_hint_is_the_global_batch_norm_under_two_replicas():
    proc = subprocess.run([sys.executable, "-c", MIRRORED_NORM_SCRIPT], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    replicas, want, grad_error = json.loads(proc.stdout.strip().splitlines()[-1])
    # Each replica holds the norm of the whole batch, and the summed gradient is its gradient.
    assert replicas == pytest.approx([want, want], rel=1e-6)
    assert grad_error < 1e-5


def test_byot_official_adapts_all_but_the_last_shallow_head_and_trains():
    model = tiny_model("byot", byot=dict(variant="official"))
    assert [("adapted" in head.output) for head in model.byot_heads] == [True, True, False]
    adapt = model.byot_heads[0].get_layer("byot_head1_adapt")
    assert adapt.kernel.shape == (32, 32) and adapt.bias is not None
    images = tf.random.uniform((8, 8, 8, 1), seed=1)
    labels = tf.constant(LABELS)
    with tf.GradientTape() as tape:
        total, _, terms = model.method.objective(model, (images,), labels, {})
    outs = model.method.forward(model, (images,), {})
    aux = [{k: v.numpy() for k, v in out.items()} for out in outs["aux"]]
    want, _ = np_byot_official(outs["logits"].numpy(), outs["features"].numpy(), aux, LABELS,
                               3.0, 0.3, 0.03)
    assert float(total) == pytest.approx(want, rel=1e-4)
    # The adaptation layers are trained (they get a gradient from the hint).
    grads = tape.gradient(total, adapt.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_mixup_pieces_match_numpy_and_the_sampler_folds_lambda():
    x, z = fixed_logits(8, 4, 4, 1), fixed_logits(8, 5)
    perm = np.array([3, 0, 1, 2, 7, 6, 5, 4])
    np.testing.assert_allclose(_mixing.mix(x, 0.7, perm).numpy(), np_mix(x, 0.7, perm), rtol=1e-6)
    got = float(_mixing.mixup_cross_entropy(z, LABELS, 0.7, perm))
    assert got == pytest.approx(np_mixup_ce(z, LABELS, 0.7, perm), rel=1e-5)

    sampler = _mixing.MixSampler(1.0, seed=3)
    sampler.build()
    draw = tf.function(lambda: sampler.sample(8))
    lams = []
    for _ in range(200):
        lam, perm = draw()
        assert sorted(perm.numpy().tolist()) == list(range(8))
        lams.append(float(lam))
    # Beta(1, 1) folded to max(λ, 1 − λ): uniform on [0.5, 1].
    assert min(lams) >= 0.5 and max(lams) <= 1.0
    assert np.mean(lams) == pytest.approx(0.75, abs=0.04)
    with pytest.raises(ConfigError, match="config.mixup.alpha must be > 0"):
        _mixing.MixSampler(0.0, seed=0)


def test_mixup_and_mixup_cskd_match_numpy():
    z, zp = fixed_logits(8, 5, seed=0), fixed_logits(8, 5, seed=1)
    _, total, logits, _, targets = run_method("mixup", (z,), mixup=dict(alpha=0.4))
    lam, perm = float(targets["lam"]), targets["perm"].numpy()
    np.testing.assert_allclose(logits.numpy(), np_mix(z, lam, perm), rtol=1e-5, atol=1e-6)
    assert total == pytest.approx(np_mixup_ce(np_mix(z, lam, perm), LABELS, lam, perm), rel=1e-5)

    _, total, _, terms, targets = run_method("mixup_cskd", (z, zp), temperature=2.0,
                                             lambda_cls=1.5)
    lam, perm = float(targets["lam"]), targets["perm"].numpy()
    mixed, mixed_partner = np_mix(z, lam, perm), np_mix(zp, lam, perm)  # the same λ and π
    want = np_mixup_ce(mixed, LABELS, lam, perm) + 1.5 * 4 * np_kl(mixed, mixed_partner, 2.0)
    assert total == pytest.approx(want, rel=1e-5)


def stub_teacher(num_classes, seed=5):
    kernel = tf.Variable(fixed_logits(num_classes, num_classes, seed=seed, scale=1.0))
    return teacher_lib.Teacher(lambda x: tf.cast(x, tf.float32) @ kernel, num_classes,
                            keep=tf.Module()), kernel


def test_kd_and_kd_cskd_match_numpy():
    z, zp = fixed_logits(8, 5, seed=0), fixed_logits(8, 5, seed=1)
    fields = dict(kd=dict(temperature=3.0, alpha=0.7), temperature=2.0, lambda_cls=0.5)
    teacher, kernel = stub_teacher(5)
    t = z @ kernel.numpy()
    for name in ("kd", "kd_cskd"):
        method = losses.get_method(name, method_config(name, **fields))
        method.teacher = teacher
        model = StubModel(5)
        method.build(model)  # λ: the method's variable, from config.lambda_cls
        images = (tf.constant(z), tf.constant(zp))[:len(method.views)]
        total, _, terms = method.objective(model, images, tf.constant(LABELS))
        want = 0.3 * np_ce(z, LABELS) + 0.7 * 9 * np_kl(z, t, 3.0)
        if name == "kd_cskd":
            want += 0.5 * 4 * np_kl(z, zp, 2.0)
        assert float(total) == pytest.approx(want, rel=1e-5), name
        assert float(terms["kd"]) == pytest.approx(9 * np_kl(z, t, 3.0), rel=1e-5)


def test_kd_term_equals_keras_logits_distillation_only_where_it_does_not_clip():
    from cskd_tf.losses.methods.kd import kd_loss

    keras_kd = keras.distillation.LogitsDistillation(temperature=4.0,
                                                     loss=keras.losses.KLDivergence())
    student = fixed_logits(8, 10, seed=0, scale=1.0)
    teacher = fixed_logits(8, 10, seed=1, scale=1.0)
    _, _, ours = kd_loss(student, teacher, LABELS, 4.0, 0.9)
    assert float(ours) == pytest.approx(float(keras_kd.compute_loss(teacher, student)), rel=1e-4)
    # Confident logits: student probabilities far below 1e-7 get clipped by KLDivergence.
    sharp_s = fixed_logits(8, 10, seed=0, scale=60.0)
    sharp_t = fixed_logits(8, 10, seed=1, scale=60.0)
    _, _, ours = kd_loss(sharp_s, sharp_t, LABELS, 4.0, 0.9)
    assert float(ours) == pytest.approx(16 * np_kl(sharp_s, sharp_t, 4.0), rel=1e-4)
    assert float(keras_kd.compute_loss(sharp_t, sharp_s)) < 0.8 * float(ours)


# --------------------------------------------------------------------------- gradient flow
@pytest.mark.parametrize("name,detached", [("cskd_e", (1, 2)), ("mixup_cskd", (1,)),
                                           ("kd", ()), ("kd_cskd", (1,))])
def test_no_gradient_reaches_the_detached_side(name, detached):
    """Even with targets computed inside the tape, partner / view2 / teacher get nothing."""
    method = losses.get_method(name, method_config(name))
    model = StubModel(5)
    method.build(model)
    teacher_kernel = None
    if name.startswith("kd"):
        method.teacher, teacher_kernel = stub_teacher(5)
    images = tuple(tf.constant(fixed_logits(8, 5, seed=s)) for s in range(len(method.views)))
    with tf.GradientTape(persistent=True) as tape:
        for x in images:
            tape.watch(x)
        total, _, _ = method.objective(model, images, tf.constant(LABELS))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(total, images[0])))) > 0
    for index in detached:
        assert tape.gradient(total, images[index]) is None, (name, index)
    if teacher_kernel is not None:
        assert tape.gradient(total, teacher_kernel) is None


def test_byot_deepest_head_gets_the_weighted_ce_gradient_and_the_aux_heads_train():
    alpha = 0.25
    model = tiny_model("byot", byot=dict(beta=0.1, alpha=alpha))
    assert len(model.byot_heads) == 3  # after stage1..stage3; stage4 feeds the classifier
    head_vars = [v for h in model.byot_heads for v in h.trainable_variables]
    trainable = {id(v) for v in model.trainable_variables}
    assert head_vars and all(id(v) in trainable for v in head_vars)
    classifier = model.backbone.get_layer("classifier").trainable_variables
    images, labels = tf.random.uniform((8, 8, 8, 1), seed=2), tf.constant(LABELS)
    with tf.GradientTape(persistent=True) as tape:
        total, logits, _ = model.method.objective(model, (images,), labels)
        ce_only = losses.cross_entropy(labels, model.forward(images, training=True)["logits"])
    # The deepest head sees only (1 − α)·CE: its KD target and hint target are detached.
    for got, want in zip(tape.gradient(total, classifier), tape.gradient(ce_only, classifier)):
        np.testing.assert_allclose(got.numpy(), (1 - alpha) * want.numpy(), rtol=1e-4, atol=1e-6)
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in tape.gradient(total, head_vars))


def test_byot_branches_are_bottlenecks_reaching_the_deepest_stage():
    """Reference branchBottleNeck: 1×1 to D/4, s×s stride s, 1×1 to D; s = 8, 4, 2."""
    model = tiny_model("byot")  # width 4 on 8×8: stages 8×8×4, 4×4×8, 2×2×16, 1×1×32
    deepest = model.backbone.get_layer("stage4").output.shape[1:]
    assert tuple(deepest) == (1, 1, 32)
    for k, head in enumerate(model.byot_heads, start=1):
        stage = model.backbone.get_layer(f"stage{k}").output.shape[1:]
        convs = [layer for layer in head.layers if isinstance(layer, keras.layers.Conv2D)]
        assert [c.filters for c in convs] == [8, 8, 32]
        s = 2 ** (4 - k)
        assert [c.kernel_size for c in convs] == [(1, 1), (s, s), (1, 1)]
        assert [c.strides for c in convs] == [(1, 1), (s, s), (1, 1)]
        assert tuple(convs[-1].output.shape[1:]) == tuple(deepest)  # resolution and width
        assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in head.layers) == 3
        out = head(tf.random.uniform((2, *stage)))
        assert out["features"].shape == (2, 32) and out["logits"].shape == (2, 10)
        assert float(tf.reduce_min(out["features"])) >= 0  # ReLU before the pool
    assert byot.branch_stride((7, 5, 3), (1, 2, 9)) == (7, 3)  # "same" padding: ⌈H/s⌉ = H_N


def test_virtual_softmax_model_has_a_bias_free_classifier_and_the_virtual_logit():
    model = tiny_model("virtual_softmax", num_classes=5)
    classifier = model.backbone.get_layer("classifier")
    assert classifier.bias is None and [v.name for v in classifier.weights] == ["kernel"]
    assert tiny_model("ce").backbone.get_layer("classifier").bias is not None  # default kept
    images = tf.random.uniform((8, 8, 8, 1), seed=3)
    total, logits, terms = model.method.objective(model, (images,), tf.constant(LABELS))
    feats = model.forward(images, training=True)["features"].numpy().astype(np.float64)
    kernel = classifier.kernel.numpy().astype(np.float64)
    # Training-mode BN uses the batch's statistics, so this second pass gives the same z.
    np.testing.assert_allclose(logits.numpy(), feats @ kernel, rtol=1e-4, atol=1e-5)
    virtual = np.linalg.norm(kernel, axis=0)[LABELS] * np.linalg.norm(feats, axis=1)
    assert np.all(virtual >= (feats @ kernel)[np.arange(8), LABELS] - 1e-5)  # Cauchy-Schwarz
    want = np_ce(np.concatenate([feats @ kernel, virtual[:, None]], axis=1), LABELS)
    assert float(total) == pytest.approx(want, rel=1e-4)
    assert terms["ce"].numpy() == pytest.approx(np_ce(feats @ kernel, LABELS), rel=1e-4)


def test_virtual_softmax_refuses_a_classifier_with_bias():
    from types import SimpleNamespace

    from cskd_tf import models

    backbone = models.build("preact_resnet10", 5, input_shape=(8, 8, 1), width=4)
    method = losses.get_method("virtual_softmax", method_config("virtual_softmax"))
    with pytest.raises(ModelError, match="linear_nobias"):
        method.build(SimpleNamespace(backbone=backbone))


# ------------------------------------------------------------------- end-to-end training
def small_config(model, method, teacher=""):
    config = default_config()
    config.update(dict(
        dataset="digits", model=model, model_width=8, method=method, max_classes=5,
        augment="none", weight_decay=0.0, learning_rate=0.05, lr_schedule="constant",
        eval_splits=("val",), eval_batch_size=512, verbose=0, kd=dict(teacher_workdir=teacher),
        # One epoch over the same 10 images (batch = whole training set): every step sees
        # the same anchors, so the per-step losses are comparable.
        max_train_per_class=2, batch_size=10, num_epochs=1,
        steps_per_epoch=6 if model == "densenet121_cifar" else 4))
    return config


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A 5-class digits teacher workdir (random weights: what KD needs is a frozen net)."""
    from cskd_tf import data as data_lib
    from cskd_tf.training import trainer
    from cskd_tf.runs import Workdir

    config = small_config("preact_resnet18", "ce")
    config.model_width = 4
    info, _ = data_lib.prepare(config)
    workdir = Workdir(str(tmp_path_factory.mktemp("teacher")))
    workdir.prepare_for_training(config)
    workdir.write("data.json", {**trainer.info_to_json(info), "augment": config.augment})
    model = trainer.build_model(config, info.num_classes, info.image_shape, info.mean, info.std)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), workdir.checkpoint_dir, 1).save()
    return workdir.path


class StepLosses(keras.callbacks.Callback):
    """Each step's loss, recovered from the running epoch means Keras logs per batch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))

    @property
    def losses(self):
        m = self.means
        return [m[0]] + [(k + 1) * m[k] - k * m[k - 1] for k in range(1, len(m))]


class TeacherFrozen(keras.callbacks.Callback):
    """Snapshots the KD teacher's weights before training and compares them after."""

    def on_train_begin(self, logs=None):
        teacher = self.model.method.teacher
        trainable = {id(v) for v in self.model.trainable_variables}
        assert not any(id(v) in trainable for v in teacher.variables)
        self.before = [v.numpy() for v in teacher.variables]

    def on_train_end(self, logs=None):
        after = [v.numpy() for v in self.model.method.teacher.variables]
        assert len(after) == len(self.before) > 0
        for a, b in zip(after, self.before):
            np.testing.assert_array_equal(a, b)
        self.checked = True


# The non-default options of docs/baselines.md, trained end to end too.
OPTIONS = (("byot", dict(byot=dict(variant="official"))),
           ("adacos", dict(adacos=dict(eval_scale="unit"))),
           ("ddgsd", dict(ddgsd=dict(kl_weight=0.5))))


@pytest.mark.parametrize("method,model,options", [
    *((m, "preact_resnet18", {}) for m in METHODS),
    *((m, "densenet121_cifar", {}) for m in DENSENET_METHODS),
    *((m, "preact_resnet18", o) for m, o in OPTIONS)])
@pytest.mark.slow
def test_method_trains_and_writes_metrics(method, model, options, request, tmp_path):
    teacher = request.getfixturevalue("teacher_dir") if losses.METHODS[method].needs_teacher else ""
    check_method_trains(method, model, teacher, tmp_path, options)


def check_method_trains(method, model, teacher_dir, tmp_path, options=None):
    """The battery: trains on tiny digits, the loss falls, metrics and history are written,
    the method's terms are logged, a KD teacher stays frozen."""
    from cskd_tf.training import trainer

    needs_teacher = losses.METHODS[method].needs_teacher
    config = small_config(model, method, teacher_dir)
    config.update(options or {})
    steps, frozen = StepLosses(), TeacherFrozen()
    callbacks = [steps, frozen] if needs_teacher else [steps]
    eager = model == "densenet121_cifar"
    tf.config.run_functions_eagerly(eager)
    try:
        metrics = trainer.train(config, str(tmp_path / "run"), extra_callbacks=callbacks)
    finally:
        tf.config.run_functions_eagerly(False)
    assert json.load(open(tmp_path / "run" / "metrics.json")) == metrics
    assert 0 <= metrics["val"]["top1_error"] <= 100
    loss = steps.losses
    assert len(loss) == config.steps_per_epoch
    assert all(np.isfinite(loss)) and loss[-1] < loss[0], loss
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert len(rows) == 1 and float(rows[0]["loss"]) == pytest.approx(np.mean(loss), rel=1e-4)
    for term in losses.METHODS[method].terms:
        assert term in rows[0], term
    if needs_teacher:
        assert frozen.checked


THROWAWAY_METHOD = '''
"""A throwaway method written by tests/test_methods.py: CE plus β times the batch mean of
the squared logits (a logit penalty)."""
import tensorflow as tf

from cskd_tf.config import check_range
from cskd_tf.losses.methods.base import Method, register


@register("throwaway_penalty", display_name="Throwaway penalty", defaults=("beta",))
class ThrowawayPenalty(Method):
    terms = ("ce", "penalty")
    replaces_cross_entropy = None

    def __init__(self, beta=0.01):
        self.beta = check_range("throwaway_penalty.beta", beta, low=0)

    @classmethod
    def from_experiment_config(cls, config):
        return cls(**config.throwaway_penalty)

    def get_config(self):
        return {"beta": self.beta}

    def loss(self, model, labels, outputs, detached, supervised):
        ce = supervised(labels, outputs["logits"])
        penalty = tf.reduce_mean(tf.square(tf.cast(outputs["logits"], tf.float32)))
        return ce + self.beta * penalty, {"ce": ce, "penalty": penalty}
'''


def test_a_method_is_one_new_file(tmp_path, monkeypatch):
    """One new module in the methods package (a directory added to its __path__) is, before
    any import, in the config (its group), the CLI's check of --config.method and the
    report's names; imported, it passes the config round trip and the training battery."""
    import sys

    import keras
    from test_method_config import check_method_config

    from cskd_tf.cli import common
    from cskd_tf.evaluation import report
    from cskd_tf.losses import methods as package

    (tmp_path / "throwaway_penalty.py").write_text(THROWAWAY_METHOD)
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    try:
        config = default_config()
        assert config.throwaway_penalty.to_dict() == {"beta": 0.01}
        config.method = "throwaway_penalty"
        assert common.load_config(config).method == "throwaway_penalty"  # what cskd-train runs
        config.method = "throwaway_penalt"
        with pytest.raises(ModelError, match="did you mean 'throwaway_penalty'\\? set "
                                             "--config.method to one of: .*throwaway_penalty"):
            common.load_config(config)
        assert report.method_name("throwaway_penalty") == "Throwaway penalty"
        doc = open(os.path.join(ROOT, "docs", "architecture.md")).read()
        assert "## Adding a training method (one file)" in doc and "one_new_file" in doc
        assert "throwaway_penalty" not in losses.METHODS  # declared, not imported yet

        losses.METHODS.discover()
        assert losses.METHODS.get("throwaway_penalty").obj.__name__ == "ThrowawayPenalty"
        check_method_config("throwaway_penalty")
        check_method_trains("throwaway_penalty", "preact_resnet18", "", tmp_path)
    finally:
        losses.METHODS.remove("throwaway_penalty")
        sys.modules.pop("cskd_tf.losses.methods.throwaway_penalty", None)
        keras.saving.get_custom_objects().pop("cskd_tf>ThrowawayPenalty", None)


# -------------------------------------------------------------------------- KD bad input
def test_kd_bad_teacher_input_is_a_one_line_model_error(teacher_dir, tmp_path):
    from cskd_tf.training import trainer

    def fails(match, teacher_workdir, teacher_model=""):
        with pytest.raises(ModelError, match=match) as info:
            teacher_lib.load_teacher(teacher_workdir, teacher_model, 5, (8, 8, 1))
        assert "\n" not in str(info.value)

    fails("needs a teacher", teacher_workdir="")
    fails("does not exist", teacher_workdir=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    fails("neither a cskd-train workdir", teacher_workdir=str(tmp_path / "empty"))
    fails("does not fit a .preact_resnet10. model.*clear --config.kd.teacher_model",
          teacher_workdir=teacher_dir, teacher_model="preact_resnet10")
    # A teacher whose class count differs from the student's.
    other = tmp_path / "ten_classes"
    shutil.copytree(teacher_dir, other)
    facts = json.load(open(other / "data.json"))
    facts["num_classes"] = 10
    json.dump(facts, open(other / "data.json", "w"))
    fails("predicts 10 classes but the student's dataset has 5", teacher_workdir=str(other))
    facts["num_classes"] = 5
    json.dump(facts, open(other / "data.json", "w"))
    shutil.rmtree(other / "checkpoints")
    fails("has no checkpoint", teacher_workdir=str(other))

    # Through the trainer: the run stops before training, with the same error.
    config = small_config("preact_resnet18", "kd_cskd", str(tmp_path / "missing_teacher"))
    with pytest.raises(ModelError, match="does not exist"):
        trainer.train(config, str(tmp_path / "student"))
    assert not os.path.exists(tmp_path / "student" / "checkpoints")


def test_saved_model_teacher_matches_the_workdir_teacher(teacher_dir, tmp_path):
    config = method_config("kd", kd=dict(teacher_workdir=teacher_dir))
    workdir_teacher = teacher_lib.load_teacher(teacher_dir, "", 5, (8, 8, 1))
    net = workdir_teacher.keep

    class Export(tf.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        # The cskd-export contract: uint8 images of any size in, logits among the outputs.
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.uint8,
                                                    name="images")])
        def serve(self, images):
            logits = self.net(tf.image.convert_image_dtype(images, tf.float32))
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    module = Export()
    # A TF Serving model base: the newest numbered version is used.
    tf.saved_model.save(module, str(tmp_path / "sm" / "3"),
                        signatures={"serving_default": module.serve})
    saved = teacher_lib.load_teacher(str(tmp_path / "sm"), "", 5, (8, 8, 1))
    images = tf.round(tf.random.uniform((4, 8, 8, 1), seed=3) * 255) / 255
    want = workdir_teacher(images).numpy()
    np.testing.assert_allclose(saved(images).numpy(), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="predicts 5 classes"):
        teacher_lib.load_teacher(str(tmp_path / "sm"), "", 7, (8, 8, 1))

    # The method takes the teacher it is handed (losses never read workdirs); a loop that
    # skips prepare_training is told to call it.
    method = losses.get_method("kd", config)
    model = tiny_model("ce", num_classes=5)
    step = tf.function(lambda x: method.detached_outputs(model, (x,), None, {})["teacher_logits"])
    with pytest.raises(ModelError, match=r"call method.prepare_training\(model, teacher="):
        step(images)
    with pytest.raises(ModelError, match="needs a teacher"):
        method.prepare_training(model)
    method.prepare_training(model, teacher=teacher_lib.teacher_for(method, model))
    np.testing.assert_allclose(step(images).numpy(), want, rtol=1e-4, atol=1e-5)
    assert teacher_lib.teacher_for(losses.get_method("cskd", config), model) is None


@pytest.mark.slow
@pytest.mark.cli
def test_cli_trains_a_byot_teacher_then_a_kd_cskd_student(tmp_path):
    """Table 4 in miniature through cskd-train; the finished student evaluates without it."""
    from cskd_tf.training.restore import restore_from_workdir

    common = [f"--config={os.path.join(ROOT, 'configs', 'digits_quick.py')}",
              "--config.model_width=8", "--config.max_classes=5",
              "--config.max_train_per_class=8", "--config.batch_size=20",
              "--config.num_epochs=1", "--config.verbose=0", "--config.eval_splits=('val',)"]
    teacher, student = str(tmp_path / "teacher"), str(tmp_path / "student")
    for args in ([f"--workdir={teacher}", "--config.method=byot"],
                 [f"--workdir={student}", "--config.method=kd_cskd",
                  "--config.model=preact_resnet10", f"--config.kd.teacher_workdir={teacher}"]):
        result = subprocess.run([console_script("cskd-train"), *common, *args],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.load(open(os.path.join(student, "metrics.json")))
    assert 0 <= metrics["val"]["top1_error"] <= 100
    shutil.move(teacher, str(tmp_path / "moved"))
    _, facts, model = restore_from_workdir(student)
    assert model(tf.zeros((1, *facts["image_shape"]))).shape == (1, 5)


# --------------------------------------------------------------------------- paper configs
def test_every_paper_cell_builds_a_valid_config():
    from cskd_tf import models, recipes

    cells = recipes.paper_cells()
    assert len(cells) == len(set(cells)) == 136
    counts = {t: len(recipes.paper_cells(t)) for t in recipes.PAPER_TABLES}
    assert counts == {"table1": 60, "table2": 25, "table3": 20, "table4": 25, "table5": 6}
    for cell in cells:
        table, dataset, model, method = cell.split(":")
        config = validate(recipes.paper_cell_config(cell))
        assert (config.model, config.method) == (model, method)
        assert method in losses.METHODS
        models.get_spec(model)
        assert config.dataset == recipes.PAPER_DATASETS[dataset]["dataset"]
    cub_kd = recipes.paper_cell_config("table4:cub200:resnet10:kd_cskd")
    assert cub_kd.kd.teacher_workdir == "runs/paper/table4/cub200/densenet121/cskd"
    assert cub_kd.kd.alpha == default_config().kd.alpha  # the rest of the group kept
    assert "table4:cub200:densenet121:cskd" in cells
    assert cub_kd.lambda_cls == 3.0 and cub_kd.image_size == 224
    imagenet = recipes.paper_cell_config("table5:imagenet:resnext101_32x4d:cskd")
    assert (imagenet.num_epochs, imagenet.batch_size) == (90, 256)
    with pytest.raises(ConfigError, match="did you mean"):
        recipes.paper_cell_config("table1:cifar100:cskd_preact_resnet18:cksd")


def test_paper_config_file_takes_the_cell_after_a_colon():
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    path = os.path.join(ROOT, "configs", "paper.py")
    values(["prog", f"--config={path}:table2:dogs:resnet18:cskd_e"])
    assert (values.config.method, values.config.model, values.config.dataset) == (
        "cskd_e", "resnet18", "tfds:stanford_dogs")

"""CS-KD on the user's own Keras model and data: fit, compiled metrics, sample weights,
regularizers, .keras round trips, pairs_from_dataset, the bad-input errors, and the
README's "From Python" example run as written."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, CLASSES, PER_CLASS = 32, 3, 20


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """3 classes x 20 PNGs of 24x24 px; each class has its own mean colour, so it is learnable."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        os.makedirs(root / f"class{c}")
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 70, (24, 24, 3)) + 80 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_ds(image_folder):
    import keras

    return keras.utils.image_dataset_from_directory(str(image_folder), image_size=(SIZE, SIZE),
                                                    batch_size=8, seed=0, verbose=False)


def cskd_method(**overrides):
    from cskd_tf import losses
    from cskd_tf.config import default_config

    config = default_config()
    config.update(overrides)
    return losses.get_method(config.method, config)


def small_sequential(regularizer=None, seed=0, head_stddev=None):
    """A Sequential without batch norm (so examples of a batch do not interact)."""
    import keras

    keras.utils.set_random_seed(seed)
    head_init = (keras.initializers.RandomNormal(stddev=head_stddev) if head_stddev
                 else "glorot_uniform")
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=regularizer),
        keras.layers.Dense(CLASSES, kernel_initializer=head_init),
    ])


def mobilenet():
    import keras

    keras.utils.set_random_seed(0)
    # minimalistic: no squeeze-excite or hard-swish, so the graph traces faster.
    base = keras.applications.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), include_top=False,
                                               weights=None, pooling="avg", minimalistic=True)
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(base(inputs)), name="mnv3")


def streaming_metrics():
    from cskd_tf.evaluation import ExpectedCalibrationError, NegativeLogLikelihood, RecallAtK

    return [ExpectedCalibrationError(), NegativeLogLikelihood(), RecallAtK(k=1, max_samples=256)]


def fixed_batch(n=8, seed=1):
    rng = np.random.default_rng(seed)
    # Per-image brightness and colour, so the logits of anchors and partners differ clearly.
    tint = rng.uniform(0.05, 1.0, (2, n, 1, 1, 3))
    anchors = (rng.uniform(0, 255, (n, SIZE, SIZE, 3)) * tint[0]).astype(np.float32)
    partners = (rng.uniform(0, 255, (n, SIZE, SIZE, 3)) * tint[1]).astype(np.float32)
    labels = np.arange(n) % CLASSES
    return anchors, partners, labels


# ------------------------------------------------------------------------------ fit


@pytest.mark.parametrize("kind", ["sequential", "mobilenet"])
def test_users_model_trains_with_cskd_on_an_image_folder(kind, folder_ds, tmp_path):
    import keras

    from cskd_tf.data import pairs_from_dataset
    from cskd_tf.models import CSKDModel

    pairs = pairs_from_dataset(folder_ds, batch_size=16, seed=0, augment="cifar",
                               cache_dir=str(tmp_path / "cache"))
    assert pairs.num_classes == CLASSES and pairs.image_shape == (SIZE, SIZE, 3)
    net = small_sequential() if kind == "sequential" else mobilenet()
    model = CSKDModel(net, method=cskd_method())
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  metrics=["accuracy", *streaming_metrics()])
    epochs = 3 if kind == "sequential" else 1
    logs = model.fit(pairs, validation_data=folder_ds, epochs=epochs, verbose=0).history
    width = int(net.layers[-2].output.shape[-1]) if kind == "mobilenet" else 16
    # What Keras logs: loss, the method's terms and the compiled metrics (Recall@k, a
    # feature metric, in evaluation only), each again for fit's validation pass.
    assert set(logs) == {"loss", "ce", "cls", "accuracy", "ece", "nll", "val_loss", "val_ce",
                         "val_accuracy", "val_ece", "val_nll", "val_recall_at_1"}, set(logs)
    for key in logs:
        assert len(logs[key]) == epochs and np.all(np.isfinite(logs[key])), key
    assert logs["cls"][-1] > 0  # partners are other images of the class
    # The compiled NLL of the validation pass is the validation cross-entropy, except that
    # NLL clips p >= 1e-12 (an untrained network with batch norm can go below that).
    assert logs["val_nll"][-1] <= logs["val_loss"][-1] * (1 + 1e-4)
    if kind == "sequential":
        assert logs["val_nll"][-1] == pytest.approx(logs["val_loss"][-1], rel=1e-4)
    assert 0 <= logs["val_recall_at_1"][-1] <= 1
    if kind == "sequential":
        assert logs["ce"][-1] < logs["ce"][0]
    assert model.predict(folder_ds, verbose=0).shape == (CLASSES * PER_CLASS, CLASSES)
    features = model.embed(np.zeros((2, SIZE, SIZE, 3), np.float32))
    assert features.shape == (2, width)  # the input of the Dense head


# ------------------------------------------------------------------------ save / load


def test_keras_file_round_trip_predicts_the_same_and_keeps_training(folder_ds, tmp_path):
    import keras

    from cskd_tf.data import pairs_from_dataset
    from cskd_tf.models import CSKDModel

    pairs = pairs_from_dataset(folder_ds, batch_size=16, seed=0, cache_dir=str(tmp_path / "c"))
    model = CSKDModel(small_sequential(), method=cskd_method(temperature=3.0, lambda_cls=2.0),
                      weight_decay=1e-4, mean=(120.0,) * 3, std=(60.0,) * 3)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  metrics=streaming_metrics())
    model.fit(pairs, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)

    x = np.random.default_rng(0).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert type(loaded) is CSKDModel
    assert loaded.method.name == "cskd" and loaded.method.temperature == 3.0
    assert float(loaded.method.lambda_cls.numpy()) == 2.0 and loaded.weight_decay == 1e-4
    assert loaded.method.get_config() == model.method.get_config()
    assert loaded.normalize.mean == (120.0,) * 3
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    momentum = [v.numpy() for v in loaded.optimizer.variables if "momentum" in v.path]
    assert momentum and any(np.abs(m).sum() > 0 for m in momentum)  # slots were restored

    before = [w.copy() for w in loaded.get_weights()]
    logs = loaded.fit(pairs, epochs=1, steps_per_epoch=1, verbose=0).history
    assert set(logs) == {"loss", "ce", "cls", "ece", "nll"}
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) + 1
    assert any(not np.array_equal(a, b) for a, b in zip(before, loaded.get_weights()))


@pytest.mark.cli
def test_import_cskd_tf_before_keras_is_enough_to_load(tmp_path):
    """In a fresh process `import cskd_tf` (before Keras) registers the classes load_model needs."""
    from cskd_tf.models import CSKDModel

    model = CSKDModel(small_sequential(), method=cskd_method())
    x = np.ones((2, SIZE, SIZE, 3), np.float32)
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    code = ("import cskd_tf, sys\n"
            "assert 'tensorflow' not in sys.modules\n"
            # TensorFlow probes for Keras and imports it itself: the harder path.
            "import tensorflow, keras, numpy as np\n"
            f"m = keras.models.load_model({path!r})\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}),"
            " verbose=0))\n")
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


# ------------------------------------------------------------- sample weights, losses


def one_step(model, anchors, partners, labels, sample_weight=None):
    import keras

    model.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = model.train_on_batch((anchors, partners), labels, sample_weight=sample_weight,
                                return_dict=True)
    return logs, model.backbone.get_weights()


@pytest.mark.parametrize("method", ["cskd", "ce"])
def test_zero_sample_weights_equal_dropping_those_examples(method):
    from cskd_tf.models import CSKDModel

    anchors, partners, labels = fixed_batch(8)
    weights = np.array([1, 1, 0, 1, 1, 0, 1, 1], np.float32)
    keep = weights > 0

    def fresh():
        # Large initial logits: anchors and partners disagree clearly, so the class-wise
        # term is well above float32 round-off.
        return CSKDModel(small_sequential(seed=3, head_stddev=3.0),
                         method=cskd_method(method=method))

    weighted_logs, weighted = one_step(fresh(), anchors, partners, labels, weights)
    dropped_logs, dropped = one_step(fresh(), anchors[keep], partners[keep], labels[keep])
    _, unweighted = one_step(fresh(), anchors, partners, labels)
    assert weighted_logs["ce"] == pytest.approx(dropped_logs["ce"], rel=1e-5)
    if method == "cskd":
        assert weighted_logs["cls"] > 1e-2
        assert weighted_logs["cls"] == pytest.approx(dropped_logs["cls"], rel=1e-5)
    for a, b in zip(weighted, dropped):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The weights did change the step: without them the update differs.
    assert any(not np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(weighted, unweighted))


def test_kernel_regularizer_enters_the_loss_and_the_gradient():
    import keras

    from cskd_tf.models import CSKDModel

    anchors, partners, labels = fixed_batch(8)
    plain = CSKDModel(small_sequential(seed=4), method=cskd_method())
    regular = CSKDModel(small_sequential(keras.regularizers.L2(0.5), seed=4), method=cskd_method())
    penalty = 0.5 * float(np.sum(np.square(regular.backbone.layers[-2].kernel.numpy())))
    assert penalty > 0
    plain_logs, plain_weights = one_step(plain, anchors, partners, labels)
    regular_logs, regular_weights = one_step(regular, anchors, partners, labels)
    assert regular_logs["ce"] == pytest.approx(plain_logs["ce"], rel=1e-6)
    assert regular_logs["loss"] - plain_logs["loss"] == pytest.approx(penalty, rel=1e-4)
    # Weights: conv kernel, conv bias, regularized Dense kernel [2], its bias, logits kernel,
    # logits bias [5]. The penalty's gradient moves [2]; the logits bias sees the same forward
    # pass, so the same gradient.
    assert not np.allclose(regular_weights[2], plain_weights[2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(regular_weights[5], plain_weights[5], rtol=1e-5, atol=1e-7)
    evaluated = regular.evaluate(anchors, labels, verbose=0, return_dict=True)
    assert evaluated["loss"] > evaluated["ce"]


# ------------------------------------------------------------------- pairs_from_dataset


def numbered_dataset(n=30, batch=None):
    """Image i is constant i (uint8); its label is i % 3: pairs can be traced back."""
    import tensorflow as tf

    images = np.repeat(np.arange(n, dtype=np.uint8), 6 * 6 * 3).reshape(n, 6, 6, 3)
    labels = (np.arange(n) % CLASSES).astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.batch(batch) if batch else ds


def test_pairs_from_dataset_keeps_the_pair_semantics(tmp_path):
    from cskd_tf.data import pairs_from_dataset

    cache = str(tmp_path / "cache")
    pairs = pairs_from_dataset(numbered_dataset(batch=7), batch_size=8, seed=5, cache_dir=cache)
    for _ in range(2):  # each fit epoch (iteration) is a full epoch with fresh draws
        anchors, partners, labels = [], [], []
        for (a, p), y in pairs:
            anchors += list(np.round(a.numpy()[:, 0, 0, 0]).astype(int))
            partners += list(np.round(p.numpy()[:, 0, 0, 0]).astype(int))
            labels += list(y.numpy())
        assert sorted(anchors) == list(range(30))  # every example an anchor exactly once
        assert [a % 3 for a in anchors] == labels
        assert [p % 3 for p in partners] == labels  # the partner is of the anchor's class
    # uint8 in, 0..255 out; reproducible from the seed, and another seed differs.
    first = [x.numpy() for (x, _), _ in pairs_from_dataset(
        numbered_dataset(), batch_size=8, seed=5, cache_dir=cache)]
    again = [x.numpy() for (x, _), _ in pairs_from_dataset(
        numbered_dataset(batch=4), batch_size=8, seed=5, cache_dir=cache)]
    other = [x.numpy() for (x, _), _ in pairs_from_dataset(
        numbered_dataset(), batch_size=8, seed=6, cache_dir=cache)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert len(os.listdir(cache)) == 1  # batched or not, one cache for the same data


def test_pairs_from_dataset_reuses_the_cache_of_a_fingerprint(tmp_path):
    import tensorflow as tf

    from cskd_tf.data import pairs_from_dataset

    seen = []

    def generator():
        for i in range(30):
            seen.append(i)
            yield np.full((6, 6, 3), i, np.uint8), i % CLASSES

    spec = (tf.TensorSpec((6, 6, 3), tf.uint8), tf.TensorSpec((), tf.int64))
    ds = tf.data.Dataset.from_generator(generator, output_signature=spec)
    cache = str(tmp_path / "cache")
    first = pairs_from_dataset(ds, batch_size=8, seed=0, cache_dir=cache, fingerprint="numbers")
    assert len(seen) == 30  # read once (uint8: the value range needs no peek)
    files = {f: os.path.getmtime(os.path.join(first.cache_path, f))
             for f in os.listdir(first.cache_path)}
    seen.clear()
    second = pairs_from_dataset(ds, batch_size=8, seed=0, cache_dir=cache, fingerprint="numbers")
    assert not seen  # not read at all: the cache of this fingerprint was reused
    assert {f: os.path.getmtime(os.path.join(second.cache_path, f))
            for f in os.listdir(second.cache_path)} == files


def test_pairs_from_dataset_handles_mixed_sizes_and_grey_images(tmp_path):
    import tensorflow as tf

    from cskd_tf.data import pairs_from_dataset

    def generator():
        for i in range(12):
            yield np.full((10 + i, 14, 1), 0.5, np.float32), i % CLASSES

    spec = (tf.TensorSpec((None, None, 1), tf.float32), tf.TensorSpec((), tf.int32))
    ds = tf.data.Dataset.from_generator(generator, output_signature=spec)
    pairs = pairs_from_dataset(ds, batch_size=4, seed=0, cache_dir=str(tmp_path), image_size=8,
                               channels=3)
    (anchor, partner), _ = next(iter(pairs))
    assert anchor.shape == (4, 8, 8, 3) and partner.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(anchor.numpy(), 128 / 255, atol=1e-3)  # [0, 1] in, [0, 1] out


# --------------------------------------------------------------------------- bad input


def one_line(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_models_and_compile_arguments_raise_one_line_model_errors():
    import keras

    from cskd_tf.errors import ModelError
    from cskd_tf.models import CSKDModel

    net = small_sequential()
    assert CSKDModel(net).method.name == "cskd"  # the default: CS-KD, the paper's T and λ
    with pytest.raises(ModelError) as e:
        CSKDModel(net, method=42)
    one_line(e, "not a method", "CSKD(")
    with pytest.raises(ModelError) as e:
        CSKDModel(net, method="csdk")
    one_line(e, "unknown method 'csdk'")
    with pytest.raises(ModelError) as e:
        CSKDModel(net, lambda_cls=3.0)
    one_line(e, "lambda_cls", "CSKD(weight=")
    no_dense = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(CLASSES, 1),
                                 keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ModelError) as e:
        CSKDModel(no_dense, method=cskd_method())
    one_line(e, "no Dense layer", "feature_layer=")
    conv_head = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(8, 1),
                                  keras.layers.GlobalAveragePooling2D(name="pool"),
                                  keras.layers.Reshape((1, 1, 8)),
                                  keras.layers.Conv2D(CLASSES, 1), keras.layers.Flatten()])
    assert CSKDModel(conv_head, method=cskd_method(), feature_layer="pool").embed(
        np.zeros((1, SIZE, SIZE, 3), np.float32)).shape == (1, 8)
    with pytest.raises(ModelError) as e:
        CSKDModel(net, method=cskd_method(), feature_layer="nope")
    one_line(e, "'nope' is not a layer")
    softmax = keras.applications.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None,
                                                  classes=CLASSES)
    with pytest.raises(ModelError) as e:
        CSKDModel(softmax, method=cskd_method())
    one_line(e, "probabilities", "classifier_activation=None")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(CLASSES)

        def call(self, x):
            return self.dense(keras.ops.mean(x, axis=(1, 2)))

    with pytest.raises(ModelError) as e:
        CSKDModel(Subclassed(), method=cskd_method())
    one_line(e, "keras.Input")
    for name in ("byot", "adacos", "virtual_softmax", "kd"):
        with pytest.raises(ModelError) as e:
            CSKDModel(net, method=cskd_method(method=name))
        one_line(e, name)

    model = CSKDModel(net, method=cskd_method())
    with pytest.raises(ModelError) as e:
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    one_line(e, "probabilities", "from_logits=True")
    with pytest.raises(ModelError) as e:
        model.compile(optimizer="sgd", loss_weights=[1.0, 2.0])
    one_line(e, "one loss weight")
    smoothing = CSKDModel(net, method=cskd_method(method="label_smoothing"))
    with pytest.raises(ModelError) as e:
        smoothing.compile(optimizer="sgd", loss=keras.losses.CategoricalFocalCrossentropy())
    one_line(e, "label_smoothing", "smoothed cross-entropy", "drop loss=")
    with pytest.raises(ModelError) as e:
        smoothing.compile(optimizer="sgd", loss_weights=2.0)
    one_line(e, "loss_weights")
    smoothing.compile(optimizer="sgd",  # the default loss, spelled out, is no conflict
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    anchors, partners, labels = fixed_batch(4)
    with pytest.raises(ModelError) as e:
        one_step(smoothing, anchors, partners, labels, np.ones(4, np.float32))
    one_line(e, "sample weights")


def test_bad_datasets_raise_one_line_data_errors(tmp_path):
    import tensorflow as tf

    from cskd_tf.data import pairs_from_dataset
    from cskd_tf.errors import DataError

    images = np.zeros((6, 4, 4, 3), np.uint8)

    def make(labels, batch=None):
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        return ds.batch(batch) if batch else ds

    cases = [
        (make(np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]], 3), {}, "integer"),
        (make(np.array([0.0, 1, 2, 0, 1, 2], np.float32)), {}, "integer"),
        (make(np.array([0, 1, -1, 0, 1, 2])), {}, "out of range"),
        (make(np.array([0, 1, 2, 0, 1, 5])), {"num_classes": 3}, "out of range"),
        (make(np.array([0, 1, 2, 0, 1, 2])).repeat(), {}, "infinite"),
        (tf.data.Dataset.from_tensor_slices(images), {}, "(image, label)"),
    ]

    def endless():
        while True:
            yield np.zeros((4, 4, 3), np.uint8), 0

    def sizes():
        for i in range(6):
            yield np.zeros((4 + i, 4, 3), np.uint8), i % 3

    spec = (tf.TensorSpec((4, 4, 3), tf.uint8), tf.TensorSpec((), tf.int64))
    cases.append((tf.data.Dataset.from_generator(endless, output_signature=spec),
                  {"max_examples": 50}, "did not end"))
    ragged = (tf.TensorSpec((None, 4, 3), tf.uint8), tf.TensorSpec((), tf.int64))
    cases.append((tf.data.Dataset.from_generator(sizes, output_signature=ragged), {},
                  "differ in size"))
    cases.append((make(np.array([0, 1, 2, 0, 1, 2])), {"augment": "cifar10"}, "augment="))
    for ds, kwargs, fragment in cases:
        with pytest.raises(DataError) as e:
            pairs_from_dataset(ds, batch_size=2, seed=0, cache_dir=str(tmp_path), **kwargs)
        one_line(e, fragment)


# ----------------------------------------------------------- cskd-train's model.keras


@pytest.mark.slow
def test_cskd_train_writes_model_keras_that_eval_and_export_accept(tiny_config, tmp_path):
    import json

    from cskd_tf import data as data_lib
    from cskd_tf.serving.export import export_workdir
    from cskd_tf.runs import load_run
    from cskd_tf.training.restore import restore_from_workdir, restore_run
    from cskd_tf.training.trainer import evaluate_splits, train

    tiny_config.num_epochs = 1
    workdir = str(tmp_path / "run")
    train(tiny_config, workdir)
    keras_file = os.path.join(workdir, "model.keras")
    assert os.path.isfile(keras_file)
    run = load_run(keras_file, need_finished=True)
    config, facts, model = restore_run(run)
    assert run.path == os.path.abspath(workdir) and run.keras_file == os.path.abspath(keras_file)
    assert type(model).__name__ == "CSKDModel"
    _, _, restored = restore_from_workdir(workdir)
    x = np.random.default_rng(0).uniform(0, 1, (4, *facts["image_shape"])).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), restored.predict(x, verbose=0),
                               atol=1e-6)
    # What cskd-eval --workdir=DIR/model.keras computes equals the run's own metrics.
    info, splits = data_lib.prepare(config)
    with open(os.path.join(workdir, "metrics.json")) as f:
        expected = json.load(f)
    got = evaluate_splits(model, config, info, splits)
    for split, values in expected.items():
        for key in ("top1_error", "nll", "ece"):
            assert got[split][key] == pytest.approx(values[key], abs=1e-4), (split, key)
    result = export_workdir(keras_file, "fromkeras", export_base=str(tmp_path / "sm"))
    assert os.path.exists(os.path.join(result.path, "saved_model.pb"))


# ------------------------------------------------------------------------------ README


def run_python_block(markdown, tmp_path, after=""):
    """Runs the first ```python block of ``markdown`` (after the text ``after``) as a script."""
    with open(os.path.join(REPO, markdown), encoding="utf-8") as f:
        text = f.read()
    code = re.search(r"```python\n(.*?)```", text[text.index(after):], re.S).group(1)
    (tmp_path / "example.py").write_text(code)
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="",
               CSKD_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return code, result


@pytest.mark.cli
def test_readme_from_python_example_runs_as_written(tmp_path):
    code, result = run_python_block("README.md", tmp_path, after="### From Python")
    assert "pairs_from_dataset" in code and "load_model" in code
    assert (tmp_path / "cskd.keras").exists()
    assert "val_recall_at_1" in result.stdout and "ece" in result.stdout


@pytest.mark.cli
def test_docs_keras_applications_example_runs_as_written(tmp_path):
    code, result = run_python_block("docs/keras.md", tmp_path)
    assert "keras.applications" in code and "CSKDModel" in code
    assert "loss" in result.stdout and "cls" in result.stdout

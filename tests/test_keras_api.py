"""The Keras-style API of CSKDModel and the methods (issue 19): λ reaches the loss from every
construction path, compile(loss=...) is the supervised term, Keras infers every logged
metric's direction, the λ warm-up callback, and a one-line error for each misuse."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cskd_tf import losses
from cskd_tf.config import default_config
from cskd_tf.errors import DataError, ModelError
from cskd_tf.models import CSKDModel

SIZE, CLASSES = 6, 3


def dense_net(classes=CLASSES, activation=None, seed=0):
    """No batch norm or dropout: training and inference give the same logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(classes, activation=activation,
                           kernel_initializer=keras.initializers.RandomNormal(stddev=2.0)),
    ])


def batch(n=6, seed=1):
    rng = np.random.default_rng(seed)
    anchors = rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
    partners = rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
    return anchors, partners, np.arange(n) % CLASSES


def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def numpy_cskd(model, anchors, partners, labels, temperature, weight):
    """CE + λ·T²·KL(p_T(x') ‖ p_T(x)) written out in NumPy from the model's logits."""
    z = model.predict(anchors, verbose=0)
    zp = model.predict(partners, verbose=0)
    ce = -np.mean(log_softmax(z)[np.arange(len(labels)), labels])
    log_q, log_p = log_softmax(zp / temperature), log_softmax(z / temperature)
    kl = np.mean(np.sum(np.exp(log_q) * (log_q - log_p), -1))
    return ce + weight * temperature ** 2 * kl, ce


def step_loss(model, anchors, partners, labels, **compile_kwargs):
    """The loss the train step computes (learning rate 0: the weights stay put)."""
    model.compile(optimizer=keras.optimizers.SGD(0.0), **compile_kwargs)
    return model.train_on_batch((anchors, partners), labels, return_dict=True)


def experiment_config(**fields):
    config = default_config()
    config.update(fields)
    return config


# ------------------------------------------------------------ λ from every path
@pytest.mark.parametrize("path", ["object", "name", "experiment_config", "from_config",
                                  "cli_names"])
def test_lambda_and_temperature_reach_the_loss_from_every_construction_path(path):
    from cskd_tf.training import fit_setup

    want_t, want_w = (4.0, 1.0) if path == "name" else (2.0, 3.0)
    method = {
        "object": lambda: losses.CSKD(temperature=2.0, weight=3.0),
        "name": lambda: "cskd",
        "experiment_config": lambda: losses.get_method(
            "cskd", experiment_config(temperature=2.0, lambda_cls=3.0)),
        "from_config": lambda: losses.CSKD.from_config(
            losses.CSKD(temperature=2.0, weight=3.0).get_config()),
        # What cskd-train builds (fit_setup.check_names -> the same method object).
        "cli_names": lambda: fit_setup.check_names(
            experiment_config(temperature=2.0, lambda_cls=3.0, model="preact_resnet18")),
    }[path]()
    model = CSKDModel(dense_net(), method=method)
    anchors, partners, labels = batch()
    logs = step_loss(model, anchors, partners, labels)
    want, ce = numpy_cskd(model, anchors, partners, labels, want_t, want_w)
    assert logs["ce"] == pytest.approx(ce, rel=1e-5)
    assert logs["cls"] > 1e-2
    assert logs["loss"] == pytest.approx(want, rel=1e-5)


def test_lambda_survives_save_and_load_and_the_warmup_schedules_it(tmp_path):
    from cskd_tf.training import CSKDCallback

    model = CSKDModel(dense_net(), method=losses.CSKD(temperature=2.0, weight=3.0))
    anchors, partners, labels = batch()
    step_loss(model, anchors, partners, labels)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.method.get_config() == {"temperature": 2.0, "weight": 3.0}
    assert float(loaded.method.lambda_cls.numpy()) == 3.0
    logs = step_loss(loaded, anchors, partners, labels)
    assert logs["loss"] == pytest.approx(
        numpy_cskd(loaded, anchors, partners, labels, 2.0, 3.0)[0], rel=1e-5)

    # The warm-up assigns the method's λ: epoch 1 of 4 trains with 3.0 · 1/4.
    data = tf.data.Dataset.from_tensors(((anchors, partners), labels))
    loaded.compile(optimizer=keras.optimizers.SGD(0.0))
    history = loaded.fit(data, epochs=1, verbose=0,
                         callbacks=[CSKDCallback(lambda_warmup_epochs=4)]).history
    assert history["lambda_cls"] == [0.75] and history["temperature"] == [2.0]
    assert history["loss"][0] == pytest.approx(
        numpy_cskd(loaded, anchors, partners, labels, 2.0, 0.75)[0], rel=1e-5)
    # The constructor's λ is what get_config keeps (the target, not the warm-up value).
    assert loaded.method.get_config()["weight"] == 3.0


def test_old_cskd_callback_arguments_get_a_one_line_pointer():
    from cskd_tf.training import CSKDCallback

    with pytest.raises(ModelError) as e:
        CSKDCallback(tf.data.Dataset.range(3))
    assert "\n" not in str(e.value) and "validation_data=" in str(e.value)


# ------------------------------------------------------------ compile(loss=...)
def test_compiled_loss_and_loss_weights_are_the_supervised_term():
    anchors, partners, labels = batch()
    method = losses.CSKD(temperature=2.0, weight=3.0)
    plain = CSKDModel(dense_net(), method=method)
    base = step_loss(plain, anchors, partners, labels)

    weighted = step_loss(CSKDModel(dense_net(), method=losses.CSKD(2.0, 3.0)), anchors,
                         partners, labels, loss_weights=0.5)
    assert weighted["ce"] == pytest.approx(0.5 * base["ce"], rel=1e-5)
    assert weighted["loss"] == pytest.approx(base["loss"] - 0.5 * base["ce"], rel=1e-5)

    def squared_ce(y, logits):  # any (labels, logits) -> per-example function
        return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True) ** 2

    custom_model = CSKDModel(dense_net(), method=losses.CSKD(2.0, 3.0))
    custom = step_loss(custom_model, anchors, partners, labels, loss=squared_ce)
    z = custom_model.predict(anchors, verbose=0)
    per_example = -log_softmax(z)[np.arange(len(labels)), labels]
    assert custom["ce"] == pytest.approx(np.mean(per_example ** 2), rel=1e-5)
    assert custom["cls"] == pytest.approx(base["cls"], rel=1e-5)

    # Methods built on the CE take the compiled loss too (max-entropy: CE − β·H).
    entropy_model = CSKDModel(dense_net(), method=losses.MaxEntropy(beta=0.1))
    entropy = step_loss(entropy_model, anchors, partners, labels, loss=squared_ce)
    assert entropy["ce"] == pytest.approx(custom["ce"], rel=1e-5)


@pytest.mark.parametrize("method", ["label_smoothing", "mixup"])
def test_methods_that_replace_the_cross_entropy_refuse_another_loss(method):
    model = CSKDModel(dense_net(), method=method)
    with pytest.raises(ModelError) as e:
        model.compile(optimizer="sgd", loss=lambda y, z: keras.ops.zeros_like(y))
    assert "\n" not in str(e.value) and method in str(e.value) and "drop loss=" in str(e.value)


# ------------------------------------------------------- metrics Keras can monitor
def test_early_stopping_infers_the_direction_of_every_logged_metric(tmp_path):
    from cskd_tf.evaluation import ExpectedCalibrationError, NegativeLogLikelihood, RecallAtK

    anchors, partners, labels = batch(12)
    pairs = tf.data.Dataset.from_tensor_slices(((anchors, partners), labels)).batch(6)
    val = tf.data.Dataset.from_tensor_slices((anchors, labels)).batch(6)
    model = CSKDModel(dense_net(), method="cskd")
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  metrics=["accuracy", ExpectedCalibrationError(), NegativeLogLikelihood(),
                           RecallAtK(k=1, max_samples=64)])
    up = {"accuracy", "val_accuracy", "val_recall_at_1"}
    down = {"loss", "val_loss", "ce", "val_ce", "cls", "ece", "val_ece", "nll", "val_nll"}
    stoppers = {m: keras.callbacks.EarlyStopping(monitor=m, patience=9) for m in up | down}
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.weights.h5"),
                                                 monitor="val_nll", save_best_only=True,
                                                 save_weights_only=True)
    logs = model.fit(pairs, validation_data=val, epochs=2, verbose=0,
                     callbacks=[*stoppers.values(), checkpoint]).history
    assert checkpoint.monitor_op is keras.ops.less
    assert set(logs) == up | down
    for name, stopper in stoppers.items():
        want = keras.ops.greater if name in up else keras.ops.less
        assert stopper.monitor_op is want, name


# ------------------------------------------------------------------ misuse errors
def one_line(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_fit_checks_the_data_before_the_first_step(tmp_path):
    from cskd_tf.data import pairs_from_dataset

    anchors, partners, labels = batch(12)
    plain = tf.data.Dataset.from_tensor_slices((anchors, labels)).batch(4)
    model = CSKDModel(dense_net(), method="cskd")
    model.compile(optimizer="sgd")
    with pytest.raises(DataError) as e:
        model.fit(plain, epochs=1, verbose=0)
    one_line(e, "(image, label)", "'cskd'", "pairs_from_dataset")
    with pytest.raises(DataError) as e:
        model.fit(anchors, labels, epochs=1, verbose=0)
    one_line(e, "pairs_from_dataset")

    two_views = pairs_from_dataset(tf.data.Dataset.from_tensor_slices((anchors, labels)),
                                   batch_size=4, seed=0, cache_dir=str(tmp_path))
    cskd_e = CSKDModel(dense_net(), method="cskd_e")
    cskd_e.compile(optimizer="sgd")
    with pytest.raises(DataError) as e:
        cskd_e.fit(two_views, epochs=1, verbose=0)
    one_line(e, "2 views", "'cskd_e' needs 3", "views=('anchor', 'partner', 'view2')")

    too_narrow = CSKDModel(dense_net(classes=2), method="cskd")
    too_narrow.compile(optimizer="sgd")
    with pytest.raises(ModelError) as e:
        too_narrow.fit(two_views, epochs=1, verbose=0)
    one_line(e, "2 logits", "3 classes", "Dense(3)")
    # A single-view method takes (image, label) batches as they are.
    ce = CSKDModel(dense_net(), method="ce")
    ce.compile(optimizer="sgd")
    assert len(ce.fit(plain, epochs=1, verbose=0).history["loss"]) == 1


def test_labels_outside_0_to_c_and_single_classes_are_named(tmp_path):
    from cskd_tf.data import pairs_from_dataset

    images = np.zeros((8, 4, 4, 3), np.uint8)

    def pairs(labels):
        ds = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels)))
        return pairs_from_dataset(ds, batch_size=4, seed=0, cache_dir=str(tmp_path))

    with pytest.raises(DataError) as e:
        pairs([10, 11, 12, 13] * 2)
    one_line(e, "labels seen are 10..13", "class(es) 0..9", "0..C-1",
             "remap the labels to 0..3")
    with pytest.raises(DataError) as e:
        pairs([0] * 8)
    one_line(e, "one class", "at least two classes")


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_probability_outputs_and_one_logit_heads_are_refused(activation):
    with pytest.raises(ModelError) as e:
        CSKDModel(dense_net(activation=activation))
    one_line(e, f"probabilities ({activation})", "without activation")
    with pytest.raises(ModelError) as e:
        CSKDModel(dense_net(classes=1))
    one_line(e, "at least 2 classes")



def test_get_config_chains_to_keras_and_reads_configs_of_the_old_format():
    model = CSKDModel(dense_net(), method=losses.CSKD(temperature=3.0, weight=2.0),
                      dtype="mixed_bfloat16")
    config = model.get_config()
    clone = CSKDModel.from_config(config)
    assert clone.dtype_policy.name == "mixed_bfloat16" and clone.name == model.name
    assert clone.method.get_config() == {"temperature": 3.0, "weight": 2.0}
    # .keras files written before methods were Keras objects: {"name", ...} plus the
    # model's lambda_cls.
    old = {**config, "method": {"name": "cskd", "temperature": 3.0}, "lambda_cls": 2.0}
    assert CSKDModel.from_config(old).method.get_config() == {"temperature": 3.0, "weight": 2.0}

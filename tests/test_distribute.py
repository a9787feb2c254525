"""Distributed training on CPU (cskd_tf.training.distribute): strategies, sharding, restarts.

Every strategy run happens in a subprocess (this file run as a script, see ``worker_main``):
logical CPU devices and MultiWorkerMirroredStrategy must be configured before TensorFlow
starts, and each worker is its own process anyway.

Exactness and batch norm: with R replicas, batch normalization normalizes each replica's
slice of the batch with that slice's statistics, so a distributed step with the
project's BN backbones is *not* the single-device step at the same global batch (about
0.1 to 0.3 apart in loss within ten steps of preact_resnet18 on digits). The runs compared for
equality therefore use ``dist_test_net``, a BN-free conv net registered below; with it,
everything else — data order and sharding, partner draws, augmentation, the CS-KD loss
and its global-batch scaling, weight decay, momentum, the LR schedule, checkpoint/resume —
must agree to float tolerance. One more run shows that a BN backbone matches too once its
batch statistics are synchronized across replicas (``distribute.sync_batch_norm``).
"""

import csv
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
WAIT = 420  # seconds any one subprocess may take on a busy 2-core machine
BASE = dict(dataset="digits", model="dist_test_net", model_width=8, max_train_per_class=8,
            augment="digits", batch_size=16, num_epochs=3, learning_rate=0.05,
            lr_decay_epochs=(2,), weight_decay=5e-4, verbose=0, jit_compile="off", seed=3,
            eval_splits=("test",),
            # float32 (not "auto", which is bfloat16 on a CPU with bfloat16 hardware): the
            # distributed runs must match one device to 1e-5; the "bf16" run sets its own.
            mixed_precision="float32")
# 10 classes x 8 = 80 training examples: 5 steps of 16 per epoch, no example dropped.
STEPS_PER_EPOCH = 5


# ----------------------------------------------------------------------------- worker side


def _register_test_net():
    from keras import layers

    from cskd_tf.models.registry import register

    @register("dist_test_net", style="cifar", min_size=8, standard_width=8)
    def dist_test_net(inputs, width):
        """Two convolutions and global pooling, no batch norm (see the module docstring)."""
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1")(inputs)
        x = layers.Identity(name="stage1")(x)
        x = layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu",
                          name="conv2")(x)
        x = layers.Identity(name="stage2")(x)
        return layers.GlobalAveragePooling2D(name="global_pool")(x)


def _patient_coordination():
    """Configures TensorFlow's coordination service as MultiWorkerMirroredStrategy would,
    but with a 2-minute heartbeat timeout instead of 10 s.

    The sandbox VM these tests run in can stall for more than 10 s as a whole; every task's
    heartbeat then looks late at once and the service fails the healthy job. A dead peer
    is still noticed at once, by its closed connection. (Private TensorFlow API, test only:
    the strategy skips its own configuration when one is already set.)
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
            for job in ("chief", "worker") if job in cluster]
    leader = "chief" if "chief" in cluster else "worker"
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=f"/job:{leader}/replica:0/task:0",
        coordinated_jobs=jobs, heartbeat_timeout_in_ms=120_000)


def worker_main(spec):
    """Runs ``spec["runs"]`` one after another in this process; see the tests for fields."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        _patient_coordination()
    if spec.get("logical_cpus"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"])
    import keras
    keras.config.disable_traceback_filtering()  # whole tracebacks in the worker logs

    from cskd_tf.config import default_config
    from cskd_tf.training import distribute, trainer

    _register_test_net()
    for run in spec["runs"]:
        config = default_config()
        config.update(BASE)
        config.update({k: tuple(v) if isinstance(v, list) else v
                       for k, v in run.get("config", {}).items()})
        losses, weights = [], []

        class Record(keras.callbacks.Callback):
            """Per-step losses, a progress marker for the killer, final weights."""

            def on_train_batch_end(self, batch, logs=None):
                losses.append(float(logs["loss"]))
                if run.get("marker"):
                    with open(run["marker"], "a") as f:
                        f.write(f"{self._epoch} {batch}\n")
                if run.get("pause_at") == [self._epoch, batch]:
                    # Hold still mid-epoch until the test has killed the other worker.
                    deadline = time.monotonic() + 60
                    while not os.path.exists(run["marker"] + ".go"):
                        assert time.monotonic() < deadline, "never told to go on"
                        time.sleep(0.05)

            def on_epoch_begin(self, epoch, logs=None):
                self._epoch = epoch

            def on_train_end(self, logs=None):
                weights.extend(w.numpy() for w in self.model.weights)
                self.policy = self.model.dtype_policy.name

        record = Record()
        trainer.train(config, run["workdir"], overwrite=run.get("overwrite", False),
                      extra_callbacks=[record])
        placement = distribute.setup(config)
        np.savez(run["out"], *weights)
        with open(run["out"] + ".json", "w") as f:
            json.dump({"losses": losses, "replicas": placement.num_replicas,
                       "kind": placement.kind, "policy": record.policy}, f)


# ------------------------------------------------------------------------------ test side


def free_ports(n):
    """``n`` distinct ports the OS reports free (bound to port 0, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Procs:
    """Started subprocesses; every one is killed at the end of the test that made it."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.started = []

    def start(self, name, spec, tf_config=None):
        env = dict(os.environ, TMPDIR=str(self.tmp), PYTHONUNBUFFERED="1")
        env.pop("TF_CONFIG", None)
        if tf_config:
            env["TF_CONFIG"] = json.dumps(tf_config)
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        proc = subprocess.Popen([sys.executable, HERE, json.dumps(spec)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name
        log.close()
        self.started.append(proc)
        return proc

    def wait_ok(self, *procs, timeout=WAIT):
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill_all()
                pytest.fail(f"{proc.args[1]} did not finish in {timeout}s:\n{tail(proc)}")
            assert proc.returncode == 0, tail(proc)

    def kill_all(self):
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def tail(proc, n=3000):
    with open(proc.log_path) as f:
        return f.read()[-n:]


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.kill_all()


def cluster(ports, index):
    return {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index}}


def load(out):
    with np.load(out + ".npz") as z:
        weights = [z[f"arr_{i}"] for i in range(len(z.files))]
    with open(out + ".json") as f:
        return weights, json.load(f)


def assert_weights_close(a, b, atol=2e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def epochs_in_history(workdir):
    with open(os.path.join(workdir, "history.csv")) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """One process with two logical CPUs: the single-device reference and mirrored runs.

    Runs (outputs under the returned folder): ``one`` (the reference every distributed run
    must reproduce: default strategy, global batch 16), ``mirrored`` (the same under
    MirroredStrategy, 8 per replica), ``bn_one`` / ``bn_mirrored`` (preact_resnet10 with
    synchronized BN, 2 steps), ``bf16`` (mirrored, mixed_bfloat16, XLA requested).
    """
    tmp = tmp_path_factory.mktemp("one_process")
    bn = {"model": "preact_resnet10", "num_epochs": 1, "steps_per_epoch": 2,
          "sync_batch_norm": True}
    runs = {
        "one": {"distribution": "one_device"},
        "mirrored": {"distribution": "mirrored"},
        "bn_one": {"distribution": "one_device", **bn},
        "bn_mirrored": {"distribution": "mirrored", **bn},
        "bf16": {"distribution": "mirrored", "mixed_precision": "mixed_bfloat16",
                 "jit_compile": "on", "num_epochs": 1},
    }
    runner = Procs(tmp)
    try:
        runner.start("one_process", {"logical_cpus": 2, "runs": [
            {"workdir": str(tmp / name), "out": str(tmp / name), "config": config}
            for name, config in runs.items()]})
        runner.wait_ok(*runner.started)
    finally:
        runner.kill_all()
    return tmp


@pytest.fixture(scope="module")
def reference(one_process):
    """(final weights, per-step losses) of the single-device run."""
    weights, info = load(str(one_process / "one"))
    assert info["kind"] == "one_device" and info["replicas"] == 1
    assert len(info["losses"]) == 3 * STEPS_PER_EPOCH
    return weights, info["losses"]


@pytest.mark.slow
@pytest.mark.cli
def test_two_workers_match_one_process(reference, procs, tmp_path):
    """Two MultiWorkerMirroredStrategy workers (TF_CONFIG, ``auto``) = one process."""
    ports = free_ports(2)
    workdir = str(tmp_path / "run")
    # verbose=1 for the "Distribution:" line (it changes only what is printed).
    workers = [procs.start(f"w{i}", {"runs": [{"workdir": workdir, "out": str(tmp_path / f"w{i}"),
                                               "config": {"distribution": "auto",
                                                          "verbose": 1}}]},
                           cluster(ports, i)) for i in range(2)]
    procs.wait_ok(*workers)
    ref_weights, ref_losses = reference
    for i in range(2):
        weights, info = load(str(tmp_path / f"w{i}"))
        assert info["kind"] == "multi_worker" and info["replicas"] == 2
        role = "the chief, writing the workdir" if i == 0 else "not the chief, writing a temporary"
        assert (f"Distribution: multi_worker (tf.distribute.MultiWorkerMirroredStrategy), 2 "
                f"replicas in sync across 2 workers; this process is TF_CONFIG task worker {i} "
                f"(input pipeline {i}, {role}") in tail(workers[i], 10**6)
        # Logged losses are global-batch means, so they match the single process too.
        np.testing.assert_allclose(info["losses"], ref_losses, rtol=0, atol=1e-5)
        assert_weights_close(weights, ref_weights)
    # Only the chief wrote the run; worker 1's temporary workdir is gone.
    with open(os.path.join(workdir, "data.json")) as f:
        assert json.load(f)["runtime"]["distribution"] == {
            "kind": "multi_worker", "strategy": "MultiWorkerMirroredStrategy", "replicas": 2,
            "workers": 2, "worker_index": 0, "chief": True, "task_type": "worker",
            "task_index": 0}
    assert epochs_in_history(workdir) == [0, 1, 2]
    assert os.path.exists(os.path.join(workdir, "metrics.json"))
    assert not glob.glob(str(tmp_path / "cskd-worker*"))


@pytest.mark.slow
@pytest.mark.cli
def test_killed_worker_restarts_and_nothing_is_lost(reference, procs, tmp_path):
    """SIGKILL worker 1 mid-epoch; restart the job; the result is the uninterrupted one.

    As with any MultiWorkerMirroredStrategy job, the surviving worker cannot continue its
    collectives alone: it fails once its peer is gone (or, here at the latest after
    ``grace`` seconds, is stopped the way a cluster manager restarts a failed job), and
    both restart with the same TF_CONFIG. They resume after the last completed epoch from
    the chief's checkpoint, and the data stream replays that epoch exactly.
    """
    ports = free_ports(2)
    workdir = str(tmp_path / "run")
    marker = str(tmp_path / "progress")

    def spec(i, attempt):
        return {"runs": [{"workdir": workdir, "out": str(tmp_path / f"w{i}-{attempt}"),
                          "marker": marker if i == 0 else None,
                          "pause_at": [1, 2] if attempt == 0 and i == 0 else None,
                          "config": {"distribution": "multi_worker"}}]}

    workers = [procs.start(f"w{i}-0", spec(i, 0), cluster(ports, i)) for i in range(2)]
    deadline = time.monotonic() + WAIT
    while True:  # until the chief holds still in the middle of epoch 1 (0-based)
        lines = open(marker).read().split("\n") if os.path.exists(marker) else []
        if "1 2" in lines:
            break
        assert all(w.poll() is None for w in workers), tail(workers[0]) + tail(workers[1])
        assert time.monotonic() < deadline, "the workers never reached epoch 1"
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait(timeout=30)
    open(marker + ".go", "w").close()  # the chief resumes into its next collective
    grace = 60  # it normally fails at once (connection refused)
    try:
        workers[0].wait(timeout=grace)
    except subprocess.TimeoutExpired:
        workers[0].kill()
        workers[0].wait(timeout=30)
    assert workers[0].returncode != 0  # it could not have finished without its peer
    assert epochs_in_history(workdir) == [0]  # epoch 1 was lost mid-way, not saved

    ports = free_ports(2)
    restarted = [procs.start(f"w{i}-1", spec(i, 1), cluster(ports, i)) for i in range(2)]
    procs.wait_ok(*restarted)
    ref_weights, ref_losses = reference
    for i in range(2):
        weights, info = load(str(tmp_path / f"w{i}-1"))
        assert_weights_close(weights, ref_weights)
        # The restart trained epochs 1 and 2 only, exactly as the reference did.
        np.testing.assert_allclose(info["losses"], ref_losses[STEPS_PER_EPOCH:], atol=1e-5)
    assert epochs_in_history(workdir) == [0, 1, 2]
    assert os.path.exists(os.path.join(workdir, "metrics.json"))


@pytest.mark.slow
@pytest.mark.cli
def test_mirrored_two_logical_cpus_match_one_device(one_process, reference):
    """MirroredStrategy over two logical CPUs: same losses and weights as one device.

    Also: a BN backbone matches once its BN is synchronized, and mixed_bfloat16 with XLA
    requested trains under the strategy.
    """
    one, one_losses = reference
    mirrored, info = load(str(one_process / "mirrored"))
    assert info["kind"] == "mirrored" and info["replicas"] == 2
    single = {"workers": 1, "worker_index": 0, "chief": True, "task_type": None,
              "task_index": None}
    for name, recorded in [("one", {"kind": "one_device", "strategy": "default", "replicas": 1}),
                           ("mirrored", {"kind": "mirrored", "strategy": "MirroredStrategy",
                                         "replicas": 2})]:
        with open(one_process / name / "data.json") as f:
            assert json.load(f)["runtime"]["distribution"] == {**recorded, **single}
    np.testing.assert_allclose(info["losses"], one_losses, rtol=0, atol=1e-5)
    assert_weights_close(mirrored, one)

    bn_one, bn_one_info = load(str(one_process / "bn_one"))
    bn_mirrored, bn_info = load(str(one_process / "bn_mirrored"))
    assert bn_info["replicas"] == 2
    np.testing.assert_allclose(bn_info["losses"], bn_one_info["losses"], rtol=0, atol=1e-4)
    assert_weights_close(bn_mirrored, bn_one, atol=1e-4)

    _, bf16_info = load(str(one_process / "bf16"))
    assert bf16_info["policy"] == "mixed_bfloat16" and bf16_info["replicas"] == 2
    assert np.isfinite(bf16_info["losses"]).all()
    # bfloat16 keeps ~3 significant digits: close to the float32 run, not equal.
    np.testing.assert_allclose(bf16_info["losses"], one_losses[:STEPS_PER_EPOCH], atol=0.05)


@pytest.mark.parametrize("pair_mode", ["memory", "stream"])
def test_anchors_once_per_epoch_across_workers(pair_mode):
    """The two workers' pipelines: each example an anchor once per epoch; partners of the
    anchor's class, drawn from the whole class (also from the other worker's anchors)."""
    import tensorflow as tf

    from cskd_tf.config import default_config
    from cskd_tf.data import prepare
    from cskd_tf.training import distribute

    config = default_config()
    config.update(BASE)
    config.update(augment="none", num_epochs=2, pair_mode=pair_mode)
    info, splits = prepare(config)
    payloads, labels = splits["train"].load()
    assert len(labels) == 80

    def key(image):  # float [0, 1] image back to its raw bytes
        return np.round(image * 255).astype(np.uint8).tobytes()

    class_of = {}
    for payload, label in zip(payloads, labels):
        class_of.setdefault(bytes(payload), set()).add(int(label))

    seen = {}  # (worker, epoch) -> (anchor keys, partner keys)
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                             num_replicas_in_sync=2)
        ds, steps = distribute.pipeline_dataset(config, info, splits["train"],
                                                ("anchor", "partner"), 0, 16, context)
        assert steps == STEPS_PER_EPOCH
        batches = list(ds.as_numpy_iterator())
        assert len(batches) == 2 * steps and all(len(y) == 8 for _, y in batches)
        for epoch in range(2):
            anchors, partners = [], []
            for (x, xp), y in batches[epoch * steps:(epoch + 1) * steps]:
                for a, p, label in zip(x, xp, y):
                    assert int(label) in class_of[key(a)] and int(label) in class_of[key(p)]
                    anchors.append(key(a))
                    partners.append(key(p))
            seen[worker, epoch] = anchors, partners
    everything = sorted(bytes(p) for p in payloads)
    for epoch in range(2):
        union = seen[0, epoch][0] + seen[1, epoch][0]
        assert sorted(union) == everything  # every example exactly once (as a multiset)
        for worker in range(2):
            other = set(seen[1 - worker, epoch][0]) - set(seen[worker, epoch][0])
            assert set(seen[worker, epoch][1]) & other
    assert seen[0, 0][0] != seen[0, 1][0]  # a new order each epoch


def test_prebuilt_shards_are_read_through_gfile():
    """``dataset="shards"`` trains from a cache folder built earlier, on a non-local
    filesystem (TensorFlow's ram://), without the original source."""
    import tensorflow as tf

    from cskd_tf.config import default_config
    from cskd_tf.data import eval_dataset, prepare, train_dataset

    config = default_config()
    config.update(BASE)
    built, built_splits = prepare(config)
    remote = f"ram://cskd-test/{os.path.basename(built.cache_path)}"
    for folder, _, files in os.walk(built.cache_path):
        target = remote + folder[len(built.cache_path):]
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(folder, name), f"{target}/{name}", overwrite=True)

    config.update(dataset="shards", data_dir=remote, max_train_per_class=0)
    info, splits = prepare(config)
    assert info.cache_path == remote and info.splits == built.splits
    assert (info.image_shape, info.mean, info.std, info.augment) == (
        built.image_shape, built.mean, built.std, built.augment)
    ds, steps = train_dataset(config, info, splits["train"])
    (x, xp), y = next(iter(ds))
    assert steps == STEPS_PER_EPOCH and x.shape == (16, 8, 8, 1) and xp.shape == x.shape
    labels = np.concatenate([y for _, y in eval_dataset(config, info, splits["test"])])
    assert len(labels) == built_splits["test"].num_examples


@pytest.mark.parametrize("name,dataset", [("imagenet_tfds", "tfds:imagenet2012"),
                                          ("imagenet_shards", "shards")])
def test_imagenet_configs(name, dataset):
    import importlib.util

    from cskd_tf import config as config_lib

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = config_lib.validate(module.get_config())
    assert config.dataset == dataset and config.distribution == "auto"
    # Table 5: ResNet-50, global batch 256, 90 epochs; streamed pairs (too big for memory).
    assert (config.model, config.batch_size, config.num_epochs, config.pair_mode) == (
        "resnet50", 256, 90, "stream")


def test_strategy_choice_and_tf_config():
    from cskd_tf.errors import ConfigError
    from cskd_tf.training import distribute

    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert distribute.resolve_kind("auto", two, num_gpus=0, tpu=False) == "multi_worker"
    one = {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    assert distribute.resolve_kind("auto", one, num_gpus=0, tpu=False) == "one_device"
    assert distribute.resolve_kind("auto", {}, num_gpus=4, tpu=False) == "mirrored"
    assert distribute.resolve_kind("auto", {}, num_gpus=1, tpu=True) == "tpu"
    assert distribute.resolve_kind("auto", {}, num_gpus=1, tpu=False) == "one_device"
    assert distribute.resolve_kind("mirrored", two) == "mirrored"
    assert distribute.task_role(two) == (1, False)
    assert distribute.task_role(one) == (0, True)
    with_chief = {"cluster": {"chief": ["c:0"], "worker": ["a:1", "b:2"]},
                  "task": {"type": "worker", "index": 0}}
    assert distribute.cluster_tasks(with_chief) == 3
    assert distribute.task_role(with_chief) == (1, False)
    assert distribute.task_role({**with_chief, "task": {"type": "chief", "index": 0}}) == (0, True)
    with pytest.raises(ConfigError, match="evaluator"):
        distribute.task_role({**two, "task": {"type": "evaluator", "index": 0}})
    with pytest.raises(ConfigError, match="index"):
        distribute.task_role({**two, "task": {"type": "worker", "index": 2}})
    with pytest.raises(ConfigError, match="JSON"):
        distribute.read_tf_config({"TF_CONFIG": "{not json"})

    class ThreeReplicas:
        num_replicas_in_sync = 3

    placement = distribute.Placement("mirrored", ThreeReplicas())
    assert placement.describe() == ("mirrored (tf.distribute.MirroredStrategy), 3 replicas in "
                                    "sync, 1 worker (this process)")
    worker = distribute.Placement("multi_worker", ThreeReplicas(), num_workers=3,
                                  worker_index=2, is_chief=False, task_type="worker",
                                  task_index=1)
    assert worker.describe().endswith("3 replicas in sync across 3 workers; this process is "
                                      "TF_CONFIG task worker 1 (input pipeline 2, not the "
                                      "chief, writing a temporary folder)")
    with pytest.raises(ConfigError, match="global batch.*multiple of the 3 replicas.*to 15"):
        distribute.check_global_batch(placement, 16)
    distribute.check_global_batch(placement, 18)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    worker_main(json.loads(sys.argv[1]))


def test_sync_batch_norm_config_reaches_the_model():
    """config.sync_batch_norm switches every BN layer of the built model, and only then.
    (The mirrored test above trains with it on two logical CPUs.)"""
    import types

    import keras

    from cskd_tf.compat import all_sublayers
    from cskd_tf.config import default_config
    from cskd_tf.training import fit_setup

    info = types.SimpleNamespace(num_classes=3, image_shape=(8, 8, 1), mean=(0.5,), std=(0.5,),
                                 class_names=("a", "b", "c"))
    config = default_config()
    config.update({"model": "preact_resnet10", "model_width": 4, "num_epochs": 1,
                   "sync_batch_norm": True})
    model = fit_setup.build_for_fit(config, info, steps=2, jit_compile=False)
    norms = [layer for layer in all_sublayers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.synchronized for layer in norms)

    config.sync_batch_norm = False
    model = fit_setup.build_for_fit(config, info, steps=2, jit_compile=False)
    assert not any(layer.synchronized for layer in all_sublayers(model)
                   if isinstance(layer, keras.layers.BatchNormalization))

"""Training on several devices or machines: strategy choice, data sharding, who writes files.

(Just over 400 lines: these three decisions depend on each other — the placement decides
the sharding and which process writes — so they stay in one module.)

``config.distribution`` picks the ``tf.distribute`` strategy:

* ``one_device``: no strategy (TensorFlow's default one). This is the single-device path
  and it is exactly the code that runs without this module.
* ``mirrored``: ``MirroredStrategy`` over this machine's GPUs; with no GPU, over its
  logical CPU devices (``tf.config.set_logical_device_configuration``), which is how the
  tests exercise it.
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` across the machines listed in
  ``TF_CONFIG`` (see docs/distributed.md), each with all its local GPUs (or its CPU).
* ``tpu``: ``TPUStrategy`` through ``TPUClusterResolver`` (``$TPU_NAME``, or the local TPU
  of a TPU VM).
* ``auto``: multi_worker when ``TF_CONFIG`` lists more than one task (chief + workers),
  else mirrored when there is more than one GPU, else tpu when a TPU is found, else
  one_device.

What changes under a strategy (:func:`setup` returns a :class:`Placement` describing it):

* ``config.batch_size`` is the *global* batch: each of the R replicas gets
  ``batch_size / R`` examples per step (it must divide evenly).
* Data (:func:`train_dataset`): each worker's input pipeline is
  ``data.train_dataset(num_shards=W, shard_index=w, batch_size=batch_size / W,
  drop_remainder=True)`` through
  ``distribute_datasets_from_function`` (no auto-sharding): the W shards of an epoch are
  disjoint and cover every training example once but the remainder of
  ``N / batch_size`` (a different few each epoch; the single-device path keeps that last
  partial batch); the union of the replicas' batches at a step is exactly the
  single-device batch at that step, and partners are drawn from the whole class (see
  cskd_tf.data.pairs).
* Loss: ``CSKDModel.train_step`` divides each replica's batch-mean objective by R, because
  Keras' TensorFlow optimizer *sums* the replicas' gradients (an all-reduce SUM); the sum
  is then the gradient of the mean over the global batch, for the cross-entropy and for
  the class-wise KL (whose average is thus over the anchors of the global batch).
* Model, optimizer (including its slots and a loss-scale wrapper), metrics and the
  method's state are created under ``Placement.scope()``.
* Files (:func:`output_workdir`): only the chief (the ``chief`` task, else worker 0) writes
  the workdir; other workers write checkpoints/logs to a temporary folder deleted at the
  end, and resume from the chief's checkpoints, so the workdir must be on a filesystem
  every worker sees.
* XLA (:func:`cskd_tf.runtime.resolve_jit_compile`): Keras 3 compiles its whole distributed
  step, which fails under multi-replica strategies; there, ``jit_compile`` turns on XLA
  auto-clustering instead. TPUStrategy compiles with XLA anyway.

Batch normalization stays per replica (each replica normalizes with its own batch's
statistics, as PyTorch's DataParallel/DDP do); ``config.sync_batch_norm=True`` (applied by
:func:`sync_batch_norm` in training/fit_setup.py) switches the model to global-batch
statistics, which makes a distributed step equal to a single-device step.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import keras
import tensorflow as tf

from cskd_tf import compat
from cskd_tf import data as data_lib
from cskd_tf.errors import ConfigError, WorkdirError
from cskd_tf.runs import Workdir

KINDS = ("one_device", "mirrored", "multi_worker", "tpu")
# The public names of the strategies (MultiWorkerMirroredStrategy's class is called
# CollectiveAllReduceStrategy inside TensorFlow).
STRATEGY_NAMES = {"one_device": "default", "mirrored": "MirroredStrategy",
                  "multi_worker": "MultiWorkerMirroredStrategy", "tpu": "TPUStrategy"}
# TF_CONFIG task types that train; an evaluator or parameter server has no role here.
TRAINING_TASKS = ("chief", "worker")


def read_tf_config(environ=None) -> dict:
    """The parsed ``TF_CONFIG`` ({} when unset); ConfigError when it is not valid JSON."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}); see docs/distributed.md") from None
    if not isinstance(value, dict):
        raise ConfigError("TF_CONFIG must be a JSON object with 'cluster' and 'task'; "
                          "see docs/distributed.md")
    return value


def cluster_tasks(tf_config: dict) -> int:
    """Number of training tasks (chief + workers) in a parsed TF_CONFIG."""
    cluster = tf_config.get("cluster") or {}
    return sum(len(cluster.get(t) or ()) for t in TRAINING_TASKS)


def task_role(tf_config: dict) -> tuple[int, bool]:
    """(worker index, is chief) of this process in a TF_CONFIG cluster.

    The index is TensorFlow's input-pipeline id: the chief is 0 and the workers follow it;
    without a chief task, worker 0 is the chief.
    """
    cluster = tf_config.get("cluster") or {}
    task = tf_config.get("task") or {}
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in TRAINING_TASKS:
        raise ConfigError(f"TF_CONFIG task type {kind!r} cannot train; use 'chief' or 'worker' "
                          f"(evaluator and ps tasks are not supported)")
    count = len(cluster.get(kind) or ())
    if not isinstance(index, int) or not 0 <= index < count:
        raise ConfigError(f"TF_CONFIG task index {index!r} is not in [0, {count}) for the "
                          f"{count} '{kind}' address(es) of its cluster")
    has_chief = bool(cluster.get("chief"))
    if kind == "chief":
        return 0, True
    return index + int(has_chief), (not has_chief and index == 0)


def _tpu_present() -> bool:
    # Only cheap local signals: TPUClusterResolver() without them probes the GCE metadata
    # server, which takes seconds to time out on every other machine.
    if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"):
        return True
    try:
        return bool(tf.config.list_physical_devices("TPU"))
    except (RuntimeError, ValueError):
        return False


def resolve_kind(setting: str, tf_config: dict | None = None, num_gpus: int | None = None,
                 tpu: bool | None = None) -> str:
    """The strategy kind for ``config.distribution`` (``auto`` resolved, see the module doc)."""
    if setting in KINDS:
        return setting
    if setting != "auto":
        raise ConfigError(f"config.distribution={setting!r} is not one of "
                          f"{', '.join(map(repr, ('auto',) + KINDS))}")
    tf_config = read_tf_config() if tf_config is None else tf_config
    if cluster_tasks(tf_config) > 1:
        return "multi_worker"
    if num_gpus is None:
        num_gpus = len(tf.config.list_physical_devices("GPU"))
    if num_gpus > 1:
        return "mirrored"
    if tpu is None:
        tpu = _tpu_present()
    if tpu:
        return "tpu"
    return "one_device"


@dataclass
class Placement:
    """The strategy a run trains under and this process's part in it.

    ``num_workers`` counts the training processes (TF_CONFIG's chief + workers; 1 for
    the single-process strategies, TPUStrategy included), ``worker_index`` is this
    process's input-pipeline id and ``is_chief`` says whether it writes the workdir.
    """

    kind: str
    strategy: tf.distribute.Strategy
    num_workers: int = 1
    worker_index: int = 0
    is_chief: bool = True
    # This process's TF_CONFIG task ("chief" or "worker", its index); None without TF_CONFIG.
    task_type: str | None = None
    task_index: int | None = None

    @property
    def distributed(self) -> bool:
        """Whether a non-default strategy is in use (even with one replica)."""
        return self.kind != "one_device"

    @property
    def num_replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def scope(self):
        """The strategy's scope; a no-op context on the single-device path."""
        return self.strategy.scope() if self.distributed else contextlib.nullcontext()

    @property
    def strategy_name(self) -> str:
        """The public ``tf.distribute`` name of the strategy (``default``: TensorFlow's own)."""
        return STRATEGY_NAMES[self.kind]

    def record(self) -> dict:
        """What a run folder keeps of it (data.json ``runtime.distribution``)."""
        return {"kind": self.kind, "strategy": self.strategy_name,
                "replicas": self.num_replicas, "workers": self.num_workers,
                "worker_index": self.worker_index, "chief": self.is_chief,
                "task_type": self.task_type, "task_index": self.task_index}

    def describe(self) -> str:
        """One line: the strategy, its replicas and workers, and this process's role."""
        replicas = f"{self.num_replicas} replica{'s' if self.num_replicas != 1 else ''}"
        strategy = ("TensorFlow's default strategy" if not self.distributed
                    else f"tf.distribute.{self.strategy_name}")
        line = f"{self.kind} ({strategy}), {replicas} in sync"
        if self.task_type is None:
            return f"{line}, 1 worker (this process)"
        role = ("the chief, writing the workdir" if self.is_chief
                else "not the chief, writing a temporary folder")
        return (f"{line} across {self.num_workers} workers; this process is TF_CONFIG task "
                f"{self.task_type} {self.task_index} (input pipeline {self.worker_index}, "
                f"{role})")


# One per process: MultiWorkerMirroredStrategy and TPU initialization can happen only once.
_PLACEMENTS: dict[str, Placement] = {}


def setup(config) -> Placement:
    """Creates (once per process) the strategy ``config.distribution`` asks for.

    Call it before any other TensorFlow work: MultiWorkerMirroredStrategy configures the
    runtime's collective ops, which is refused once the runtime has started.
    """
    kind = resolve_kind(config.distribution)
    if kind not in _PLACEMENTS:
        if any(p.kind in ("multi_worker", "tpu") for p in _PLACEMENTS.values()):
            raise ConfigError(f"this process already trains under "
                              f"{', '.join(_PLACEMENTS)}; config.distribution={kind!r} needs "
                              f"a new process")
        _PLACEMENTS[kind] = _create(kind)
    return _PLACEMENTS[kind]


def _create(kind: str) -> Placement:
    if kind == "one_device":
        return Placement(kind, tf.distribute.get_strategy())
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return Placement(kind, tf.distribute.MirroredStrategy(devices))
    if kind == "multi_worker":
        tf_config = read_tf_config()
        if cluster_tasks(tf_config) < 1:
            raise ConfigError("config.distribution='multi_worker' needs TF_CONFIG with the "
                              "cluster's addresses and this task; see docs/distributed.md")
        index, chief = task_role(tf_config)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = tf_config["task"]
        return Placement(kind, strategy, num_workers=cluster_tasks(tf_config),
                         worker_index=index, is_chief=chief, task_type=task["type"],
                         task_index=int(task.get("index", 0)))
    if kind == "tpu":
        try:
            name = os.environ.get("TPU_NAME") or (
                "local" if tf.config.list_physical_devices("TPU") else "")
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            raise ConfigError(f"config.distribution='tpu' found no usable TPU ({e}); set "
                              f"$TPU_NAME or run on a TPU VM") from None
        # TPUStrategy is single-client: this one process drives every TPU host (each host
        # still gets its own input pipeline), so it is the only, chief, worker.
        return Placement(kind, tf.distribute.TPUStrategy(resolver))
    raise ConfigError(f"unknown distribution kind {kind!r}")


def check_global_batch(placement: Placement, global_batch: int):
    replicas = placement.num_replicas
    if global_batch % replicas:
        raise ConfigError(f"config.batch_size={global_batch} is the global batch and must be a "
                          f"multiple of the {replicas} replicas; set --config.batch_size to "
                          f"{max(replicas, global_batch // replicas * replicas)}")


def pipeline_dataset(config, info, split, views, start_epoch, global_batch: int,
                     context: tf.distribute.InputContext):
    """One input pipeline's dataset of per-replica batches, and the steps per epoch.

    Pipeline ``i`` of ``n`` (one per worker) is shard ``i`` of ``n`` of the pair stream at
    ``global_batch / n`` examples per step, split into ``global_batch / R`` per replica.
    """
    per_pipeline = global_batch // context.num_input_pipelines
    per_replica = context.get_per_replica_batch_size(global_batch)
    # Full batches only (see drop_remainder): the step divides each replica's mean by R,
    # which is the global mean only when every replica holds the same number of examples,
    # and a short last global batch would leave some replicas with a smaller (or empty)
    # slice; the shards of the workers must also have the same number of steps.
    ds, steps = data_lib.train_dataset(
        config, info, split, views=views, start_epoch=start_epoch,
        num_shards=context.num_input_pipelines, shard_index=context.input_pipeline_id,
        batch_size=per_pipeline, drop_remainder=True)
    if per_replica != per_pipeline:
        # A step takes one pipeline batch, its consecutive slices going to the local replicas.
        ds = ds.rebatch(per_replica, drop_remainder=True)
    # The shards are made above; sharding again would drop data.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options), steps


def train_dataset(placement: Placement, config, info, split, views, start_epoch=0,
                  drop_remainder=False):
    """(dataset for ``model.fit``, steps per epoch) under a placement.

    On the single-device path this is ``data.train_dataset`` unchanged: every epoch's last
    batch is kept, short, unless ``drop_remainder``. Under a strategy only full batches
    (see :func:`pipeline_dataset`).
    """
    if not placement.distributed:
        return data_lib.train_dataset(config, info, split, views=views,
                                      start_epoch=start_epoch, drop_remainder=drop_remainder)
    global_batch = int(config.batch_size)
    check_global_batch(placement, global_batch)
    steps = []

    def make(context):
        ds, count = pipeline_dataset(config, info, split, views, start_epoch, global_batch,
                                     context)
        steps.append(count)
        return ds

    dataset = placement.strategy.distribute_datasets_from_function(make)
    # Every pipeline plans the same number of batches per epoch (cskd_tf.data.pairs).
    assert steps and len(set(steps)) == 1, steps
    return dataset, steps[0]


# --------------------------------------------------------------------- files and agreement


def _gather(placement: Placement, value: float) -> list[float]:
    """One scalar from every replica of every worker; a barrier for the workers."""
    strategy = placement.strategy

    @tf.function
    def gather():
        local = strategy.run(lambda: tf.constant([value], tf.float32))
        return strategy.gather(local, axis=0)

    return [float(v) for v in gather().numpy()]


def barrier(placement: Placement):
    """Returns once every worker has reached it (no-op with one worker)."""
    if placement.num_workers > 1:
        _gather(placement, 0.0)


def check_agree(placement: Placement, value: int, what: str):
    """Raises WorkdirError on every worker unless all workers hold the same ``value``."""
    if placement.num_workers <= 1:
        return
    values = _gather(placement, float(value))
    if min(values) != max(values):
        raise WorkdirError(f"the workers disagree on {what} ({min(values):g} to "
                           f"{max(values):g}; this worker: {value}); put --workdir on a "
                           f"filesystem every worker reads (NFS, GCS fuse) so all resume from "
                           f"the chief's checkpoints")


def output_workdir(placement: Placement, workdir: Workdir, config, overwrite=False,
                   precision=None) -> Workdir:
    """The Workdir this process writes: the run's own on the chief, a temporary one elsewhere.

    ``precision``: the Keras policy the run trains under (see Workdir.prepare_for_training).

    Every worker must still run checkpoint saving and the callbacks (the steps are
    collective); only the chief's files are kept. Returns after all workers got here, so
    the chief has created (or, with ``overwrite``, emptied) the workdir before anyone reads
    its checkpoints.
    """
    if placement.is_chief:
        workdir.prepare_for_training(config, overwrite=overwrite, precision=precision)
        out = workdir
    else:
        # The chief refuses too; failing here keeps this worker from waiting for it.
        workdir.refuse_if_finished(overwrite)
        out = Workdir(tempfile.mkdtemp(prefix=f"cskd-worker{placement.worker_index}-"))
        out.prepare_for_training(config)
        # Also removed if training raises; release() removes it on success.
        atexit.register(shutil.rmtree, out.path, True)
    barrier(placement)
    return out


def release(placement: Placement, out: Workdir, workdir: Workdir):
    """Ends a run: waits for every worker, then deletes a non-chief's temporary outputs.

    The wait keeps the chief (which hosts TensorFlow's coordination service) from exiting
    while another worker still evaluates, which would make that worker fail.
    """
    barrier(placement)
    if out.path != workdir.path:
        shutil.rmtree(out.path, ignore_errors=True)


def sync_batch_norm(model: keras.Model, enabled: bool = True) -> int:
    """Makes every BatchNormalization layer of ``model`` use global-batch statistics.

    Under a multi-replica strategy each replica otherwise normalizes with the statistics
    of its own slice of the batch (and keeps its own moving averages; the first replica's
    are the ones saved). Synchronized statistics cost three all-reduces per layer per
    forward pass. The flag is read when the layer runs, so this works on built models.
    Returns the number of layers changed.
    """
    count = 0
    for layer in compat.all_sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(enabled)
            count += 1
    return count

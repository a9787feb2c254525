"""End-to-end training speed: ``model.fit`` steps of the real ``cskd-train`` path.

The library behind ``cskd-speed --end_to_end`` (cskd_tf/cli/speed.py). Where
:mod:`cskd_tf.evaluation.speed` times the model alone on one in-memory batch, this times
what a training run does: the shard cache (``data.prepare``, built once in the normal
cache directory and reused), the pair pipeline with JPEG decoding and augmentation
(``distribute.train_dataset`` with the method's views), the model built and compiled by
training/fit_setup.py (``check_names``, ``steps_per_epoch``, ``build_for_fit``, and the
callbacks of ``fit_callbacks`` without a workdir and without the val split, so no
evaluation runs in the timed window) after ``runtime.setup`` (seed, precision policy,
XLA) — then ``model.fit``.

Each variant (method × precision × XLA setting) runs in a fresh spawned process,
so its precision policy, traced graphs and peak resident memory are its own. Per variant,
with B the anchor batch, N timed steps after W warm-up steps, t_i the end of step i
(``logs["loss"]`` read, so the step has finished) and c_i the process CPU time then:

* step seconds     s = (t_{W+N} − t_W) / N   (also the median of t_i − t_{i−1});
* anchor images/s  = B / s: images that receive the cross-entropy gradient per second;
* CPU s per step   = (c_{W+N} − c_W) / N, every thread of the process (model, pipeline,
  Python) counted;
* pipeline CPU s per batch p: before training, the same dataset is iterated alone for
  ``pipeline_batches`` batches (after 5 untimed ones) between two moments at which the
  process has gone idle, i.e. its prefetch buffers are full, so the CPU time between them
  is what producing those batches cost (up to any growth of the autotuned buffers);
* pipeline CPU share = p / (CPU s per step): the fraction of the training process's CPU
  the input pipeline needs, one pair batch being consumed per step.

Why not count tf.data's own threads during ``fit``: in TensorFlow 2.21 on Linux its worker
threads carry no distinguishing name (/proc/self/task/*/comm is "python" for them and for
the model's compute threads alike), so per-thread accounting cannot tell them apart. The
share assumes the pipeline costs the same CPU per batch alone as beside the model; on a
machine where the two contend for cores (cache, hyper-threads) it is an estimate, and a
value above 1 means that estimate is off, not that the pipeline is the whole process.

The CS-KD/CE step-time ratio compares each CS-KD variant with CE at the same precision
and XLA setting; the model-alone ideal is about 1.33 (one extra forward pass without
gradient), and the pipeline adds a second augmented image per anchor.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import asdict, dataclass

from cskd_tf.config import CHOICES
from cskd_tf.data.augment import AUGMENTS
from cskd_tf.errors import ConfigError
from cskd_tf.evaluation.speed import SpeedSetup, machine_facts, step_clock

PIPELINE_WARMUP_BATCHES = 5


@dataclass(frozen=True)
class EndToEndSetup(SpeedSetup):
    """:class:`SpeedSetup` for training runs: ``num_classes`` becomes ``config.max_classes``
    (the dataset's first N classes, all of them when it has fewer) and ``data_dir`` the
    TinyImageNet root ("" = the embedded digits)."""

    augment: str = ""  # "" = the dataset's own: tinyimagenet on TinyImageNet, digits on digits


@dataclass(frozen=True)
class Variant:
    """One measured training set-up."""

    method: str
    precision: str = "float32"
    xla: str = "auto"


def variants(methods=("ce", "cskd"), precision=("float32",), xla=("auto",)) -> list[Variant]:
    """Every variant to measure, CE first; ConfigError for an unknown or repeated value."""
    from cskd_tf.losses import METHODS
    from cskd_tf.runtime import POLICIES, gpu_present

    _check_list("methods", methods, sorted(METHODS))
    _check_list("precision", precision, POLICIES)
    _check_list("xla", xla, CHOICES["jit_compile"])
    if "mixed_float16" in precision and not gpu_present():
        raise ConfigError("precision mixed_float16 needs a GPU; use mixed_bfloat16 on CPU")
    out = []
    for setting in xla:
        for policy in precision:
            for method in methods:
                out.append(Variant(method, policy, setting))
    return out


def _check_list(name, values, allowed):
    values = list(values)
    if not values:
        raise ConfigError(f"{name} is empty; give at least one value")
    for value in values:
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        if values.count(value) > 1:
            raise ConfigError(f"{name} lists {value!r} twice")


def variant_config(setup: EndToEndSetup, variant: Variant):
    """The validated training config of a variant, as ``cskd-train`` would read it.

    TinyImageNet starts from the paper's recipe (recipes.paper_config) under
    ``protocol="tune"`` as configs/tinyimagenet_lowshot_cpu.py does; digits from
    default_config().
    """
    from cskd_tf import config as config_lib
    from cskd_tf.recipes import paper_config

    if setup.data_dir:
        config = paper_config("tinyimagenet", protocol="tune", data_dir=setup.data_dir)
    else:
        config = config_lib.default_config()
    config.update(dict(
        model=setup.model, model_width=int(setup.width), batch_size=int(setup.batch_size),
        image_size=int(setup.image_size), max_classes=int(setup.num_classes),
        method=variant.method, mixed_precision=variant.precision, jit_compile=variant.xla,
        verbose=0))
    if setup.augment:
        config.augment = setup.augment
    return config_lib.validate(config)


def run_variant(setup: EndToEndSetup, variant: Variant):
    """Times one variant in this process (call it in a fresh one); returns (row, data facts).

    The steps are ``cskd_tf.training.trainer.train``'s, without a workdir, checkpoints or
    the final evaluation.
    """
    from cskd_tf import data as data_lib
    from cskd_tf import runtime
    from cskd_tf.training import distribute, fit_setup

    config = variant_config(setup, variant)
    method = fit_setup.check_names(config)
    placement = distribute.setup(config)
    jit_compile = runtime.setup(config)
    info, splits = data_lib.prepare(config)
    steps_per_epoch = fit_setup.steps_per_epoch(config, info)
    with placement.scope():
        model = fit_setup.build_for_fit(config, info, steps_per_epoch,
                                        distribute.resolve_jit_compile(placement, jit_compile),
                                        method)
    # One dataset for both measurements, so its in-memory shards are held once.
    train_ds, _ = distribute.train_dataset(placement, config, info, splits["train"],
                                           views=method.views)
    pipeline_cpu = pipeline_cpu_per_batch(train_ds, setup.pipeline_batches)
    train_only = {"train": splits["train"]}
    callbacks = fit_setup.fit_callbacks(config, info, train_only, jit_compile)
    clock = step_clock()
    model.fit(train_ds, epochs=1, steps_per_epoch=setup.warmup + setup.steps,
              callbacks=[*callbacks, clock], shuffle=False, verbose=0)

    first = setup.warmup - 1  # the end of the last warm-up step starts the window
    seconds = (clock.marks[-1] - clock.marks[first]) / setup.steps
    cpu_per_step = (clock.cpu_marks[-1] - clock.cpu_marks[first]) / setup.steps
    durations = [b - a for a, b in zip(clock.marks[first:], clock.marks[first + 1:])]
    row = {
        "method": variant.method, "precision": variant.precision,
        "xla": bool(jit_compile), "distribution": placement.kind,
        "step_seconds": seconds, "step_seconds_median": statistics.median(durations),
        "anchor_images_per_s": config.batch_size / seconds,
        "cpu_seconds_per_step": cpu_per_step,
        "pipeline_cpu_seconds_per_batch": pipeline_cpu,
        "pipeline_cpu_share": pipeline_cpu / cpu_per_step,
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps_timed": setup.steps,
    }
    facts = {"dataset": info.name, "num_classes": info.num_classes, "augment": info.augment,
             "train_examples": info.splits["train"], "steps_per_epoch": steps_per_epoch}
    return row, facts


def pipeline_cpu_per_batch(dataset, batches: int) -> float:
    """Process CPU seconds to produce one batch of ``dataset``, measured with nothing else
    running (see the module docstring)."""
    iterator = iter(dataset)
    for _ in range(PIPELINE_WARMUP_BATCHES):
        next(iterator)
    start = settled_process_time()
    for _ in range(batches):
        next(iterator)
    spent = settled_process_time() - start
    del iterator
    return spent / batches


def settled_process_time(window=0.1, idle_fraction=0.05, limit=20.0) -> float:
    """``time.process_time()`` once the process has gone idle: less than ``idle_fraction``
    of one core used over ``window`` seconds (background pipeline threads have filled
    their buffers), or after ``limit`` seconds."""
    deadline = time.perf_counter() + limit
    last = time.process_time()
    while True:
        time.sleep(window)
        now = time.process_time()
        if now - last < idle_fraction * window or time.perf_counter() > deadline:
            return now
        last = now


def measure_end_to_end(setup: EndToEndSetup, methods=("ce", "cskd"), precision=("float32",),
                       xla=("auto",), log=print,
                       initializer=None) -> dict:
    """Every variant timed in its own spawned process, as one JSON-able report.

    ``xla``: "auto" (cskd-train's default: on only with a GPU), "off", "on".
    ``initializer`` runs first in each process (the CLI passes its quiet TensorFlow import).
    Every variant's config is checked here first, so a bad value fails before any timing.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from cskd_tf.runtime import cpu_flags
    from cskd_tf.training import fit_setup

    if setup.steps < 1 or setup.warmup < 1 or setup.pipeline_batches < 1:
        raise ConfigError("steps, warmup and pipeline_batches must be >= 1 (the first timed "
                          "step needs a warm-up step before it)")
    if setup.augment:
        _check_list("augment", [setup.augment], AUGMENTS)
    plan = variants(methods, precision, xla)
    for variant in plan:
        fit_setup.check_names(variant_config(setup, variant))
    rows, facts = [], {}
    for variant in plan:
        # A fresh process per variant: its own precision policy, graphs and peak memory.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=initializer) as pool:
            row, facts = pool.submit(run_variant, setup, variant).result()
        rows.append(row)
        log(f"  {variant.method:5s} {variant.precision:14s} "
            f"xla={'on' if row['xla'] else 'off':3s} {row['anchor_images_per_s']:8.1f} "
            f"anchor img/s, pipeline CPU share {row['pipeline_cpu_share']:.2f}")
    setup_row = {k: v for k, v in asdict(setup).items()
                 if k in ("model", "width", "batch_size", "image_size", "data_dir", "warmup",
                          "pipeline_batches")}
    return {
        "machine": {**machine_facts(), "cpu_bf16_flags": sorted(flag for flag in cpu_flags()
                                                            if "bf16" in flag)},
        "setup": {**setup_row, **facts, "timed_steps": setup.steps},
        "train_steps": rows,
        "cskd_over_ce_step_time": step_time_ratios(plan, rows),
    }


def step_time_ratios(plan, rows) -> dict:
    """{"xla=off,float32": CS-KD step s / CE step s, ...}, for each CS-KD
    variant that has a CE variant at the same precision and XLA setting."""
    by_variant = dict(zip(plan, rows))
    ratios = {}
    for variant, row in by_variant.items():
        ce = by_variant.get(Variant("ce", variant.precision, variant.xla))
        if variant.method == "cskd" and ce is not None:
            key = f"xla={'on' if row['xla'] else 'off'},{variant.precision}"
            ratios[key] = row["step_seconds"] / ce["step_seconds"]
    return ratios


def format_table(report) -> str:
    """The report of :func:`measure_end_to_end` as a markdown table and summary lines."""
    s = report["setup"]
    lines = ["", f"end to end: {s['dataset']} ({s['num_classes']} classes, augment "
             f"{s['augment']}), {s['model']} width {s['width'] or 'standard'}, batch "
             f"{s['batch_size']}, {s['image_size']} px, {s['timed_steps']} timed steps after "
             f"{s['warmup']}",
             "", "| method | precision | XLA | step (s) | median (s) | anchor img/s "
             "| CPU s/step | pipeline CPU s/batch | pipeline CPU share | peak MiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["train_steps"]:
        lines.append(
            f"| {r['method']} | {r['precision']} | "
            f"{'on' if r['xla'] else 'off'} | {r['step_seconds']:.3f} | "
            f"{r['step_seconds_median']:.3f} | {r['anchor_images_per_s']:.1f} | "
            f"{r['cpu_seconds_per_step']:.3f} | {r['pipeline_cpu_seconds_per_batch']:.4f} | "
            f"{r['pipeline_cpu_share']:.2f} | {r['peak_memory_mib']:.0f} |")
    lines.append("")
    for key, ratio in report["cskd_over_ce_step_time"].items():
        lines.append(f"CS-KD / CE step time ({key}): {ratio:.2f}  (model alone ideal ≈ 1.33)")
    lines.append("pipeline CPU share = CPU s the pipeline alone spends per batch / CPU s of "
                 "the training process per step")
    return "\n".join(lines)

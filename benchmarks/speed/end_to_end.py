"""End to end: ``model.fit`` steps of the real ``cskd-train`` path, one fresh process per
variant.

What is timed is what a training run does: the shard cache (``data.prepare``, built once in
the normal cache directory and reused), the pair pipeline with JPEG decoding and
augmentation (``distribute.train_dataset`` with the method's views), the model built and
compiled by training/fit_setup.py after ``runtime.setup`` (seed, precision policy, XLA),
and ``fit_callbacks`` without a workdir or a val split, so no evaluation runs in the timed
window. The formulas of every figure: benchmarks/README.md, section 3.
``python -m benchmarks.speed end_to_end`` is the command line.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import asdict, dataclass

from benchmarks.speed.common import (SpeedSetup, Variant, check_list, machine_facts,
                                     precision_speedups, step_clock, step_time_ratios,
                                     variants)
from benchmarks.speed.flops import flop_rates, forward_flops

PIPELINE_WARMUP_BATCHES = 5


@dataclass(frozen=True)
class EndToEndSetup(SpeedSetup):
    """:class:`SpeedSetup` for training runs on a dataset."""

    max_classes: int = 0  # config.max_classes: the dataset's first N classes (0 = all)
    augment: str = ""  # "" = the dataset's own: tinyimagenet on TinyImageNet, digits on digits


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
        image_size=int(setup.image_size), max_classes=int(setup.max_classes),
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
    # Timed steps all of one shape: a short last batch would retrace (and, under XLA,
    # recompile) inside the timed window.
    steps_per_epoch = fit_setup.steps_per_epoch(config, info, drop_remainder=True)
    with placement.scope():
        model = fit_setup.build_for_fit(config, info, steps_per_epoch,
                                        runtime.resolve_jit_compile(jit_compile, placement),
                                        method)
    # One dataset for both measurements, so its in-memory shards are held once.
    train_ds, _ = distribute.train_dataset(placement, config, info, splits["train"],
                                           views=method.views, drop_remainder=True)
    pipeline_cpu = pipeline_cpu_per_batch(train_ds, setup.pipeline_batches)
    callbacks = fit_setup.fit_callbacks(config, info, {"train": splits["train"]}, jit_compile)
    clock = step_clock()
    model.fit(train_ds, epochs=1, steps_per_epoch=setup.warmup + setup.steps,
              callbacks=[*callbacks, clock], shuffle=False, verbose=0)

    first = setup.warmup - 1  # the end of the last warm-up step starts the window
    seconds = (clock.marks[-1] - clock.marks[first]) / setup.steps
    cpu_per_step = (clock.cpu_marks[-1] - clock.cpu_marks[first]) / setup.steps
    durations = [b - a for a, b in zip(clock.marks[first:], clock.marks[first + 1:])]
    rate = config.batch_size / seconds
    row = {
        "method": variant.method, "precision": variant.precision,
        "xla": bool(jit_compile), "distribution": placement.kind,
        "step_seconds": seconds, "step_seconds_median": statistics.median(durations),
        "anchor_images_per_s": rate,
        **flop_rates(variant.method, forward_flops(model), rate, setup.peak_gflops),
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
    """Process CPU seconds to produce one batch of ``dataset`` with nothing else running:
    after :data:`PIPELINE_WARMUP_BATCHES` untimed batches, between two moments at which
    the process has gone idle (its prefetch buffers full)."""
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


def measure(setup: EndToEndSetup, methods=("ce", "cskd"), precision=("float32",),
            xla=("auto",), log=print, initializer=None) -> dict:
    """Every variant timed in its own spawned process, as one JSON-able report.

    A fresh process per variant gives each its own precision policy, traced graphs and
    peak resident memory. ``initializer`` runs first in each process (the command line
    passes its quiet TensorFlow import). Every variant's config is checked first, so a bad
    value fails before any timing.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from cskd_tf.data.augment import AUGMENTS
    from cskd_tf.training import fit_setup

    setup.check()
    if setup.augment:
        check_list("augment", [setup.augment], AUGMENTS)
    plan = variants(methods, precision, xla)
    for variant in plan:
        fit_setup.check_names(variant_config(setup, variant))
    rows, facts = [], {}
    for variant in plan:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=initializer) as pool:
            row, facts = pool.submit(run_variant, setup, variant).result()
        rows.append(row)
        log(f"  {variant.method:5s} {variant.precision:14s} "
            f"xla={'on' if row['xla'] else 'off':3s} {row['anchor_images_per_s']:8.1f} "
            f"anchor img/s, pipeline CPU share {row['pipeline_cpu_share']:.2f}")
    return {
        "mode": "end to end",
        "machine": machine_facts(),
        "setup": {**asdict(setup), **facts, "timed_steps": setup.steps},
        "train_steps": rows,
        "cskd_over_ce_step_time": step_time_ratios(plan, rows),
        "speedup_over_float32": precision_speedups(plan, rows),
    }

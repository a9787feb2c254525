"""The one table both speed benchmarks print: a markdown table of the measured variants
(the columns the report has) and the summary lines under it."""

from __future__ import annotations

from benchmarks.speed.flops import TRAIN_FLOP_FACTOR


def _on_off(value):
    return "on" if value else "off"


def _percent(value):
    return f"{100 * value:.0f}%"


# (row key, header, format); a column is shown when some row has its key.
COLUMNS = [
    ("method", "method", str),
    ("precision", "precision", str),
    ("xla", "XLA", _on_off),
    ("step_seconds", "step (s)", "{:.3f}".format),
    ("step_seconds_median", "median (s)", "{:.3f}".format),
    ("anchor_images_per_s", "anchor img/s", "{:.1f}".format),
    ("gflop_per_s", "GFLOP/s", "{:.1f}".format),
    ("peak_fraction", "of peak", _percent),
    ("cpu_seconds_per_step", "CPU s/step", "{:.3f}".format),
    ("pipeline_cpu_seconds_per_batch", "pipeline CPU s/batch", "{:.4f}".format),
    ("pipeline_cpu_share", "pipeline CPU share", "{:.2f}".format),
    ("peak_memory_mib", "peak MiB", "{:.0f}".format),
]
TEXT_COLUMNS = ("method", "precision", "xla")


def format_table(report) -> str:
    """A report of ``model_alone.measure`` or ``end_to_end.measure`` as text."""
    s, rows = report["setup"], report["train_steps"]
    data = (f"{s['dataset']} ({s['num_classes']} classes, augment {s['augment']})"
            if "dataset" in s else f"random images ({s['num_classes']} classes)")
    lines = ["", f"{report['mode']}: {data}, {s['model']} width {s['width'] or 'standard'}, "
             f"batch {s['batch_size']}, {s['image_size']} px, {s['timed_steps']} timed steps "
             f"after {s['warmup']}", ""]
    if not any(r.get("peak_fraction") is not None for r in rows):
        rows = [{k: v for k, v in r.items() if k != "peak_fraction"} for r in rows]
    columns = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines.append("| " + " | ".join(header for _, header, _ in columns) + " |")
    lines.append("|" + "|".join("---" if key in TEXT_COLUMNS else "---:"
                                for key, _, _ in columns) + "|")
    for r in rows:
        cells = ["–" if r.get(key) is None else fmt(r[key]) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key, ratio in report["cskd_over_ce_step_time"].items():
        lines.append(f"CS-KD / CE step time ({key}): {ratio:.2f}  (model alone ideal ≈ 1.33)")
    for key, speedup in report.get("speedup_over_float32", {}).items():
        method, xla, precision = key.split(",")
        lines.append(f"{precision} / float32 ({method}, {xla}): {speedup:.2f}x the float32 "
                     "anchor images/s")
    forward = next((r["forward_gflop"] for r in rows if "forward_gflop" in r), None)
    if forward is not None:
        factors = ", ".join(f"{name} {factor}x" for name, factor in TRAIN_FLOP_FACTOR.items())
        peak = s.get("peak_gflops") or 0
        lines.append(f"FLOPs (convolutions and dense layers): {forward:.3f} GFLOP per image "
                     f"forward; GFLOP/s = forwards per anchor ({factors}) x forward GFLOP x "
                     f"anchor img/s" + (f"; peak {peak:g} GFLOP/s as given" if peak else ""))
    if "pipeline" in report:
        p = report["pipeline"]
        lines.append(f"pair pipeline ({p['dataset']}): {p['pairs_per_s']:.0f} pairs/s = "
                     f"{p['pairs_per_s_over_slowest_step_consumption']:.1f}x the slowest "
                     "step's consumption")
    if "eval_images_per_s" in report:
        lines.append(f"evaluation: {report['eval_images_per_s']:.0f} images/s "
                     f"({report['eval_gflop_per_s']:.1f} GFLOP/s); peak memory "
                     f"{report['peak_memory_mib']:.0f} MiB")
    if any("pipeline_cpu_share" in r for r in rows):
        lines.append("pipeline CPU share = CPU s the pipeline alone spends per batch / CPU s "
                     "of the training process per step")
    return "\n".join(lines)

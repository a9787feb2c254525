"""Same-seed float32 vs mixed_bfloat16 comparison of the issue-20 runs (benchmarks/README.md 3.6).

Reads the finished runs given (run folders, or folders holding them) with the project's
run reader (``cskd_tf.runs``: method, seed, recorded precision, the val split's metrics)
and prints, per method, the per-seed table, mean ± sample std per precision, the paired
differences bf16 − float32, and CS-KD's top-1 gain over CE per seed and precision.

    python benchmarks/paired_precision.py /work/runs/bf20_*/
"""

import sys

import numpy as np

from cskd_tf.runs import find_run_dirs, load_run

KEYS = ("top1_error", "ece", "ece_ts", "recall_at_1")
PRECISIONS = ("float32", "mixed_bfloat16")


def load(paths):
    """{(method, precision, seed): val metrics} of the finished runs in ``paths``."""
    runs = {}
    for path in find_run_dirs(paths):
        run = load_run(path)
        if run.finished and run.precision in PRECISIONS and "val" in run.metrics:
            runs[(run.method, run.precision, run.seed)] = run.metrics["val"]
    return runs


def spread(values, signed=False):
    mean = f"{np.mean(values):+.2f}" if signed else f"{np.mean(values):.2f}"
    return f"{mean} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2f}"


def main(paths):
    runs = load(paths)
    for method in sorted({m for m, _, _ in runs}):
        seeds = sorted({s for m, _, s in runs if m == method})
        print(f"\n## {method}\n")
        print("| seed | " + " | ".join(f"{k} f32 | {k} bf16" for k in KEYS) + " |")
        print("|---" * (1 + 2 * len(KEYS)) + "|")
        for seed in seeds:
            cells = [f"{runs[(method, p, seed)][k]:.2f}" if (method, p, seed) in runs else "–"
                     for k in KEYS for p in PRECISIONS]
            print(f"| {seed} | " + " | ".join(cells) + " |")
        print()
        for precision in PRECISIONS:
            have = [s for s in seeds if (method, precision, s) in runs]
            print(f"- {precision} (n={len(have)}): " + ", ".join(
                f"{k} {spread([runs[(method, precision, s)][k] for s in have])}" for k in KEYS))
        both = [s for s in seeds if all((method, p, s) in runs for p in PRECISIONS)]
        for k in KEYS:
            diff = [runs[(method, PRECISIONS[1], s)][k] - runs[(method, PRECISIONS[0], s)][k]
                    for s in both]
            if diff:
                print(f"- paired bf16 − float32 {k} (n={len(diff)}): "
                      + " ".join(f"{d:+.2f}" for d in diff) + f"; mean {spread(diff, True)}")
    print()
    for precision in PRECISIONS:
        paired = [s for s in range(100)
                  if ("ce", precision, s) in runs and ("cskd", precision, s) in runs]
        gains = [runs[("ce", precision, s)]["top1_error"]
                 - runs[("cskd", precision, s)]["top1_error"] for s in paired]
        if gains:
            print(f"- CS-KD top-1 gain over CE, {precision}: "
                  + " ".join(f"{g:+.2f}" for g in gains) + f"; mean {spread(gains)}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["runs"])

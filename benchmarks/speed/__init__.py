"""Speed benchmarks of CE and CS-KD training, beside the library (never imported by it).

* :mod:`benchmarks.speed.model_alone`: train steps on one in-memory batch, evaluation and
  the pair pipeline, each timed separately;
* :mod:`benchmarks.speed.end_to_end`: ``model.fit`` on the real cskd-train path;
* :mod:`benchmarks.speed.flops`: FLOPs of a built model, for the GFLOP/s both report;
* :mod:`benchmarks.speed.table`: the one table both print.

Command line: ``python -m benchmarks.speed {model_alone,end_to_end} [flags]`` from the
repository root; methods and formulas in benchmarks/README.md, section 3.
"""

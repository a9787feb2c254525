"""Measurement tools that sit beside the cskd_tf library, as timm keeps benchmark.py beside
its package: they import cskd_tf, cskd_tf never imports them (tests/test_layering.py), and
they are not installed; run them from the repository root (``python -m benchmarks.speed``).
"""

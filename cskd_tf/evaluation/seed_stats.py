"""Statistics over the seeds of one experiment, as the result tables print them.

``mean ± std`` with the sample standard deviation, and the relative change from a baseline
row (the paper's Table 1 puts e.g. ``(−8.8%)`` beside each method's top-1 error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Stat:
    mean: float
    std: float
    n: int


def mean_std(values) -> Stat | None:
    """Mean and sample standard deviation (ddof=1; 0 for a single run)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Stat(mean, std, n)


def relative_change(value: float, baseline: float) -> float | None:
    """Percent change from the baseline, e.g. 21.99 vs 24.11 -> -8.8."""
    if baseline is None or baseline == 0:
        return None
    return 100.0 * (value - baseline) / baseline

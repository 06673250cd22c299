"""Fits cost ~ c * n^p in log-log space: p near 2 is quadratic, near 1 is linear."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def fit_exponent(ns: Sequence[float], costs: Sequence[float]) -> float:
    """Least-squares slope of log(cost) against log(n) over finite positive points; NaN if < 2."""
    points = [(n, c) for n, c in zip(ns, costs) if c is not None and math.isfinite(c) and c > 0]
    if len(points) < 2:
        return math.nan
    log_n, log_c = np.log(np.array(points, dtype=np.float64)).T
    slope, _ = np.polyfit(log_n, log_c, 1)
    return float(slope)

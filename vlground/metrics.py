"""Statistics used by the probes: paired tests, R² against co-occurrence, seed bands.

All functions take plain sequences / numpy arrays and return floats (NaN when undefined), so
they are easy to check by hand.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def paired_test(match: Sequence[float], mismatch: Sequence[float]) -> float:
    """One-sided Wilcoxon signed-rank p-value for ``mismatch > match`` (paired by index).

    NaN with fewer than 2 pairs or when every difference is zero.
    """
    from scipy.stats import wilcoxon

    d = np.asarray(mismatch, dtype=float) - np.asarray(match, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2 or np.all(d == 0):
        return float("nan")
    return float(wilcoxon(d, alternative="greater", zero_method="wilcox").pvalue)


def r_squared(x: Sequence[float], y: Sequence[float]) -> float:
    """R² of the least-squares line ``y ~ a + b x`` (= squared Pearson correlation).

    NaN with fewer than 3 points or when x or y is constant.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    ss_res = float(((yc - (xc @ yc) / (xc @ xc) * xc) ** 2).sum())
    return 1.0 - ss_res / float((yc**2).sum())


def mean_band(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t confidence band over seeds: ``(mean, low, high)``.

    One value gives a zero-width band; NaNs are ignored.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(v.mean())
    if v.size == 1:
        return (m, m, m)
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return (m, m - half, m + half)


def stars(p: float | None) -> str:
    """``***`` at p < 0.001, ``**`` < 0.01, ``*`` < 0.05, else empty."""
    if p is None or not math.isfinite(p):
        return ""
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else ""


def nan_to_none(x):
    """Recursively turn NaN/inf floats into None (JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_to_none(v) for v in x]
    return x

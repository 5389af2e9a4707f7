"""Correlation statistics for experiments: Pearson, Spearman (average ranks for ties) and a percentile
bootstrap interval that resamples datasets, since a handful of datasets is all an experiment has."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Stat = Callable[[Sequence[float], Sequence[float]], float]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; NaN when either side is constant or there are fewer than 3 points."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length: {a.size} vs {b.size}")
    if a.size < 3:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return math.nan if denom == 0.0 else float(a @ b) / denom


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    out = np.empty(v.size, dtype=np.float64)
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and v[order[j + 1]] == v[order[i]]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rho: Pearson r of the ranks."""
    return pearson(ranks(x).tolist(), ranks(y).tolist())


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    stat: Stat = spearman,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of `stat` over resamples of the (x, y) pairs with replacement.

    Resamples where the statistic is undefined (a constant side) are left out; NaN when fewer than 3
    points or no resample is defined."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.size < 3:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    values = np.array([stat(a[i].tolist(), b[i].tolist()) for i in idx])
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def correlation_row(
    x: Sequence[float], y: Sequence[float], *, n_boot: int, seed: int
) -> dict[str, float | int]:
    """Both coefficients with their intervals, keyed as in `experiment_stats` and summary.json."""
    p_lo, p_hi = bootstrap_ci(x, y, pearson, n_boot=n_boot, seed=seed)
    s_lo, s_hi = bootstrap_ci(x, y, spearman, n_boot=n_boot, seed=seed)
    return {
        "n_datasets": len(x),
        "pearson": pearson(x, y),
        "spearman": spearman(x, y),
        "pearson_ci_lo": p_lo,
        "pearson_ci_hi": p_hi,
        "spearman_ci_lo": s_lo,
        "spearman_ci_hi": s_hi,
    }

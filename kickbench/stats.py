"""Aggregates with confidence intervals (pure numpy)."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def bootstrap_ci(values, weights=None, n_boot: int = BOOTSTRAP_SAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float, float]:
    """(Weighted) mean and percentile bootstrap interval; the fixed seed makes it reproducible."""
    x = np.asarray(values, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, x.size, size=(n_boot, x.size))
    means = (x[pick] * w[pick]).sum(axis=1) / w[pick].sum(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float((x * w).sum() / w.sum()), float(lo), float(hi)


def aggregate(values, weights=None, how: str = "mean") -> tuple[float, float, float]:
    """A metric over samples, NaN (not measured: an unparsed judgment, an empty answer) left
    out: "mean" with bootstrap CI, "sum" (counts; the interval is the sum itself), "ppl"
    (exp of the weight-weighted mean of values, e.g. NLL per token)."""
    x = np.asarray(values, dtype=float)
    w = None if weights is None else np.asarray(weights, dtype=float)
    keep = ~np.isnan(x) if w is None else ~np.isnan(x) & (w > 0)
    if how == "sum":
        total = float(x[keep].sum())
        return total, total, total
    mean, lo, hi = bootstrap_ci(x[keep], None if w is None else w[keep])
    return tuple(float(np.exp(v)) for v in (mean, lo, hi)) if how == "ppl" else (mean, lo, hi)

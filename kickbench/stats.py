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

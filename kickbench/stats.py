"""Aggregates with confidence intervals (pure numpy); paired comparisons build on the same
draws (paired.py).

Resampling units: by default every item is its own unit; `groups` (one label per item, e.g.
the conversation id of each turn of a dialogue) makes the bootstrap a cluster bootstrap that
draws whole groups, so the turns of one conversation always travel together. Every bootstrap
here draws from `np.random.default_rng(seed)` in the same way, so with the fixed seed a number
is reproducible and, without groups, identical to a plain item bootstrap."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def units(groups, n: int) -> tuple[np.ndarray, int]:
    """(unit code of each of n items, number of units): codes 0.. in order of first appearance;
    no groups: every item is its own unit (codes 0..n-1)."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray([str(v) for v in groups])
    if g.size != n:
        raise ValueError(f"groups has {g.size} labels for {n} values")
    if n == 0:
        return np.zeros(0, dtype=int), 0
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=int)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.ravel()], first.size


def draws(n_units: int, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(n_boot, n_units) unit indices drawn with replacement: the resampled units of each
    replicate. Paired statistics apply the same draws to both runs."""
    return np.random.default_rng(seed).integers(0, n_units, size=(n_boot, n_units))


def replicates(n: int, groups=None, n_boot: int = BOOTSTRAP_SAMPLES,
               seed: int = BOOTSTRAP_SEED) -> list[np.ndarray]:
    """The item indices of each bootstrap replicate (a unit drawn k times contributes all of
    its items k times); what the bootstraps below compute on, spelled out (for tests/audits)."""
    codes, g = units(groups, n)
    members = [np.flatnonzero(codes == u) for u in range(g)]
    return [np.concatenate([members[u] for u in row]) if g else np.zeros(0, dtype=int)
            for row in draws(g, n_boot, seed)]


def replicate_means(x: np.ndarray, w: np.ndarray, codes: np.ndarray, g: int,
                    pick: np.ndarray) -> np.ndarray:
    """Weighted mean of every replicate: per-unit sums of w*x and w, added over the drawn units
    (the same as the weighted mean over the replicate's items)."""
    sxw = np.bincount(codes, weights=x * w, minlength=g)
    sw = np.bincount(codes, weights=w, minlength=g)
    return sxw[pick].sum(axis=1) / sw[pick].sum(axis=1)


def bootstrap_ci(values, weights=None, n_boot: int = BOOTSTRAP_SAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = 0.95,
                 groups=None) -> tuple[float, float, float]:
    """(Weighted) mean and percentile bootstrap interval; the fixed seed makes it reproducible.
    groups: resample whole groups (cluster bootstrap; see the module doc)."""
    x = np.asarray(values, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    codes, g = units(groups, x.size)
    means = replicate_means(x, w, codes, g, draws(g, n_boot, seed))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float((x * w).sum() / w.sum()), float(lo), float(hi)


def aggregate(values, weights=None, how: str = "mean", groups=None) -> tuple[float, float, float]:
    """A metric over samples, NaN (not measured: an unparsed judgment, an empty answer) left
    out: "mean" with bootstrap CI, "sum" (counts; the interval is the sum itself), "ppl"
    (exp of the weight-weighted mean of values, e.g. NLL per token). groups: one label per
    sample; the interval resamples whole groups (e.g. dialogues)."""
    x = np.asarray(values, dtype=float)
    w = None if weights is None else np.asarray(weights, dtype=float)
    keep = ~np.isnan(x) if w is None else ~np.isnan(x) & (w > 0)
    if how == "sum":
        total = float(x[keep].sum())
        return total, total, total
    g = None if groups is None else np.asarray([str(v) for v in groups])[keep]
    mean, lo, hi = bootstrap_ci(x[keep], None if w is None else w[keep], groups=g)
    return tuple(float(np.exp(v)) for v in (mean, lo, hi)) if how == "ppl" else (mean, lo, hi)

"""Paired comparisons of a compressed run with the dense run on the same items (issue 17):
the paired bootstrap interval of the difference, an exact McNemar test for 0/1 metrics, the
right -> wrong / wrong -> right flips ("Accuracy is Not All You Need", Dutta et al. 2024) and
Holm's correction across a family of points. Pure numpy and the standard library, over
per-sample frames (store.samples); which runs to pair is results.paired_frame's business.

What each metric's p-value is:
- 0/1 metrics (Metric.binary), items independent: exact McNemar on the discordant pairs;
- everything else (F1, ROUGE, judge scores, ...) and 0/1 metrics resampled in groups: the
  paired bootstrap p (see paired_bootstrap), with the same resampled units as the interval;
- perplexity-like metrics (aggregate "ppl"): the difference is of the token-weighted mean NLL
  per token (log of the perplexity ratio), windows (or answers) as the units, bootstrap p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import stats

if TYPE_CHECKING:
    from .tasks.metrics import Metric

ALPHA = 0.05  # significance level of the reports' marks, after Holm's correction

# per-sample sources of perplexity-like metrics: (summed NLL, tokens) columns
PPL_SOURCES = {"perplexity": ("nll", "tokens"), "answer_ppl": ("answer_nll", "answer_tokens")}


@dataclass(frozen=True)
class Paired:
    """diff = mean(a) - mean(b) over the paired items; [low, high] its percentile interval;
    p a two-sided p-value (see paired_bootstrap / mcnemar_exact); units: resampling units."""

    diff: float
    low: float
    high: float
    p: float
    units: int


def paired_bootstrap(a, b, weights_a=None, weights_b=None, groups=None,
                     n_boot: int = stats.BOOTSTRAP_SAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                     level: float = 0.95) -> Paired:
    """Paired bootstrap of mean(a) - mean(b) where a[i] and b[i] are the same item: each
    replicate resamples item (or group) indices once and takes both means on them, so what the
    items share cancels. Weights (e.g. tokens per window) make each mean weighted; each side may
    have its own. p: the fraction of replicates on the other side of 0 (0 counted as the other
    side), doubled, capped at 1; 1 when diff is 0. It is never reported below 2**(1 - units),
    the smallest two-sided p an exact sign-flip test on that many units can reach (with a few
    units every replicate can share the sign of diff, which is no evidence)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same length, got {x.size} and {y.size}")
    if x.size == 0:
        return Paired(*(float("nan"),) * 4, 0)
    wx = np.ones_like(x) if weights_a is None else np.asarray(weights_a, dtype=float)
    wy = np.ones_like(y) if weights_b is None else np.asarray(weights_b, dtype=float)
    codes, g = stats.units(groups, x.size)
    pick = stats.draws(g, n_boot, seed)
    reps = stats.replicate_means(x, wx, codes, g, pick) - stats.replicate_means(y, wy, codes, g, pick)
    diff = float((x * wx).sum() / wx.sum() - (y * wy).sum() / wy.sum())
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    return Paired(diff, float(lo), float(hi), bootstrap_p(diff, reps, g), g)


def bootstrap_p(diff: float, reps, n_units: int | None = None) -> float:
    """Two-sided p of a bootstrap distribution `reps` of a difference: the fraction of
    replicates at or beyond 0 on the side opposite to `diff`, doubled, capped at 1; floored
    at 2**(1 - n_units) when n_units is given (see paired_bootstrap)."""
    reps = np.asarray(reps, dtype=float)
    if diff == 0 or np.isnan(diff) or reps.size == 0:
        return 1.0 if diff == 0 else float("nan")
    other = (reps >= 0) if diff < 0 else (reps <= 0)
    p = min(1.0, 2 * float(other.mean()))
    return max(p, min(1.0, 2.0 ** (1 - n_units))) if n_units else p


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar test on the discordant pairs: b items right only in one run, c
    right only in the other. Two-sided: p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c,
    1/2); 1 when there are no discordant pairs."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def flips(before, after) -> tuple[int, int]:
    """(right -> wrong, wrong -> right) between two 0/1 runs on the same items ("Accuracy is
    Not All You Need", Dutta et al. 2024): items the first run got right and the second wrong,
    and the reverse."""
    x, y = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same length, got {x.size} and {y.size}")
    return int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values: sorted ascending, the i-th (from 1)
    becomes max over j <= i of min(1, (m - j + 1) p_j). NaN (no test) is left out of the family
    and stays NaN. Returned in the input order."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * q[order]))
    back = np.empty(m)
    back[order] = adjusted
    out[ok] = back
    return out


def compare(dense: pd.DataFrame, comp: pd.DataFrame, metric: Metric, group_by: str | None = None,
            n_boot: int = stats.BOOTSTRAP_SAMPLES, seed: int = stats.BOOTSTRAP_SEED) -> dict | None:
    """One metric of two runs' per-sample frames (store.samples) on their common items (`idx`
    and `item_id` equal), items where either value is NaN (not measured) left out. group_by:
    the item field whose value is a resampling unit (a dialogue's id). Returns pairs, units,
    dense, compressed (the paired means), diff (compressed - dense), ci_low, ci_high, scale
    ("value", or "nll_per_token" for perplexity-like metrics), test ("mcnemar" / "bootstrap"),
    p, right_to_wrong, wrong_to_right (0/1 metrics; None otherwise); None when a side lacks
    the metric or aggregates it as a count ("sum": no paired test)."""
    if metric.aggregate == "sum":
        return None
    cols = list(PPL_SOURCES.get(metric.name, ())) if metric.aggregate == "ppl" else [metric.name]
    if not cols or any(c not in side.columns for side in (dense, comp) for c in cols):
        return None
    keep = ["idx", "item_id", "item", *cols]
    both = dense[keep].merge(comp[keep], on=["idx", "item_id"], suffixes=("_dense", "_comp"))
    side = {s: both[[f"{c}_{s}" for c in cols]].astype(float).to_numpy() for s in ("dense", "comp")}
    ok = np.isfinite(side["dense"]).all(axis=1) & np.isfinite(side["comp"]).all(axis=1)
    if metric.aggregate == "ppl":  # NLL per token, weighted by tokens
        ok &= (side["dense"][:, 1] > 0) & (side["comp"][:, 1] > 0)
    both, d, c = both[ok], side["dense"][ok], side["comp"][ok]
    if both.empty:
        return None
    groups = None if group_by is None else both.item_dense.map(lambda it: it.get(group_by, it.get("id")))
    if metric.aggregate == "ppl":
        r = paired_bootstrap(c[:, 0] / c[:, 1], d[:, 0] / d[:, 1], c[:, 1], d[:, 1],
                             groups=groups, n_boot=n_boot, seed=seed)
        dense_mean, comp_mean = d[:, 0].sum() / d[:, 1].sum(), c[:, 0].sum() / c[:, 1].sum()
    else:
        r = paired_bootstrap(c[:, 0], d[:, 0], groups=groups, n_boot=n_boot, seed=seed)
        dense_mean, comp_mean = d[:, 0].mean(), c[:, 0].mean()
    out = {"pairs": len(both), "units": r.units, "dense": float(dense_mean),
           "compressed": float(comp_mean), "diff": r.diff, "ci_low": r.low, "ci_high": r.high,
           "scale": "nll_per_token" if metric.aggregate == "ppl" else "value",
           "test": "bootstrap", "p": r.p, "right_to_wrong": None, "wrong_to_right": None}
    binary = metric.binary and np.isin(d[:, 0], (0, 1)).all() and np.isin(c[:, 0], (0, 1)).all()
    if binary:
        out["right_to_wrong"], out["wrong_to_right"] = flips(d[:, 0], c[:, 0])
        if groups is None:  # McNemar needs independent pairs; grouped 0/1 keeps the bootstrap p
            out.update(test="mcnemar", p=mcnemar_exact(out["right_to_wrong"], out["wrong_to_right"]))
    return out

"""OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity"): per-block sparsity from outliers.

Each decoder block's layer outlier ratio (LOD) is the percentage of its Wanda scores
|W_ij| * ||X_j||_2, over all the block's linears together, above M times their mean. A block
with more outliers keeps more weights. As in the reference (luuyin/OWL lib/prune_all.py,
prune_*_outlier), the ratios are scaled to [0, 2*lambda], centred on their mean and added to
the target density (1 - sparsity). Hence:

- the plain mean over blocks equals the target; the reference averages over blocks, which is
  the parameter-weighted mean because every block of these models has the same parameter count;
- the most and least pruned blocks are exactly 2*lambda apart. The paper states the range
  [target - lambda, target + lambda]; that holds when the mean ratio lies midway between the
  extremes (always with two blocks). Skewed ratios shift it: a block may lie up to 2*lambda
  from the target;
- equal ratios (max == min, e.g. no outliers anywhere) give uniform sparsity (the reference
  divides by zero there).

Sparsity outside [0, 1) is refused, never clipped: clipping would break "the mean is the
target" that curves and reports rely on. A target with target - lambda < 0 or
target + lambda >= 1 is refused before any work; skewed ratios can still push a block out of
range, refused after the outlier pass (before anything is pruned).

The Wanda metric, measured on the dense model, sets the ratios whatever the pruning method
(magnitude and SparseGPT too), as in the reference. The allocation works with any pruning
method that honours per-layer specs (apply's layer_spec).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .calibration import Calibration, walk_layers
from .layers import block_linears, weight_matrix
from .registry import Allocator, Option, register
from .wanda import InputNorms, wanda_scores

VERSION = 1  # bump when a change can alter this compressor's numbers (kickbench/versions.py)

EPS = 1e-9  # float noise around sparsity 0 (target == lambda) is not a negative sparsity


def outlier_ratio(scores: torch.Tensor | Sequence[torch.Tensor], m: float) -> float:
    """Percentage of scores greater than m times their mean (reference: check_outlier_mean).

    scores: one tensor, or the score matrices of a block's linears, pooled as one set (no
    concatenated copy of the block is made)."""
    parts = [scores] if isinstance(scores, torch.Tensor) else list(scores)
    total = sum(p.numel() for p in parts)
    # float64 sums: a block of a large model has ~10^8 scores
    mean = sum(p.sum(dtype=torch.float64).item() for p in parts) / total
    outliers = sum(int((p > m * mean).sum()) for p in parts)
    return 100.0 * outliers / total


def check_target(target: float, lam: float) -> None:
    """Refuse a target whose sparsity band [target - lambda, target + lambda] leaves [0, 1)."""
    if target - lam < 0 or target + lam >= 1:
        raise ValueError(f"OWL: sparsity {target:g} with owl_lambda {lam:g} gives layer "
                         f"sparsities in [{target - lam:g}, {target + lam:g}], outside [0, 1); "
                         f"owl_lambda must be <= sparsity and < 1 - sparsity")


def layer_sparsities(ratios: Sequence[float] | torch.Tensor, target: float,
                     lam: float) -> torch.Tensor:
    """Per-block sparsity (float64) from per-block outlier ratios, as the reference computes."""
    check_target(target, lam)
    r = torch.as_tensor(ratios, dtype=torch.float64)
    spread = r.max() - r.min()
    if spread == 0:  # nothing tells the blocks apart: uniform
        return torch.full_like(r, target)
    shift = (r - r.min()) / spread * (2 * lam)
    keep = shift - shift.mean() + (1 - target)  # density: more outliers keep more
    sparsity = 1 - keep
    if sparsity.min() < -EPS or sparsity.max() >= 1:
        worst = int(sparsity.argmin() if sparsity.min() < -EPS else sparsity.argmax())
        raise ValueError(f"OWL: sparsity {target:g} with owl_lambda {lam:g} gives block {worst} "
                         f"sparsity {sparsity[worst].item():.4f}, outside [0, 1) (the outlier "
                         f"ratios are skewed: blocks lie up to 2*lambda from the target); "
                         f"use a smaller owl_lambda")
    return sparsity.clamp(min=0.0)


def _input_norms(model, calibration: Calibration) -> dict[str, torch.Tensor]:
    """Squared input-channel norms of every target linear, on the dense model.

    walk_layers runs the blocks in turn; the callback records and edits nothing, so each
    block's outputs feed the next one dense, as in the reference's outlier pass."""
    calibration.captured(model)
    norms: dict[str, torch.Tensor] = {}

    def record(names, _modules, stats):
        norms.update(dict.fromkeys(names, stats.sq))  # linears fed one input share it
        return [{} for _ in names]

    walk_layers(model, calibration.inputs, calibration.kwargs,
                collect=lambda mod: InputNorms(weight_matrix(mod).shape[1]),
                compress_layers=record)
    return norms


def allocate(model, spec, calibration: Calibration) -> dict[str, float]:
    """{qualified linear name: sparsity}: every linear of block i gets block i's sparsity."""
    m, lam = spec.option("owl_m"), spec.option("owl_lambda")
    check_target(spec.sparsity, lam)  # before the calibration pass
    norms = _input_norms(model, calibration)
    blocks = [linears for _, linears in block_linears(model)]
    ratios = [outlier_ratio([wanda_scores(weight_matrix(mod), norms[name])
                             for name, mod in linears.items()], m) for linears in blocks]
    sparsity = layer_sparsities(ratios, spec.sparsity, lam).tolist()
    return {name: s for linears, s in zip(blocks, sparsity) for name in linears}


def _positive(value) -> str | None:
    return None if math.isfinite(value) and value > 0 else "must be a finite number > 0"


def _deviation(value) -> str | None:
    return None if 0 <= value < 0.5 else "must be in [0, 0.5)"


register(Allocator(
    "owl", "OWL: per-layer sparsity from each layer's outlier ratio (Yin et al. 2024)", allocate,
    options=(Option("owl_m", 5.0, "OWL: outlier threshold, multiples of the mean Wanda score",
                    check=_positive),
             Option("owl_lambda", 0.08, "OWL: per-layer sparsity deviation limit",
                    check=_deviation)),
    calibrated=True))

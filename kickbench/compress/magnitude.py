"""Magnitude pruning: drop the smallest |W| of each weight matrix (or in each N:M group)."""

from __future__ import annotations

import torch

from .layers import target_linears, weight_matrix
from .masks import mask_for
from .spec import CompressionSpec


def magnitude_mask(w: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    return mask_for(w.abs().float(), sparsity, nm, per_row=False)


def prune(model, spec: CompressionSpec, **_) -> dict[str, dict]:
    """Prune every target linear in place; returns {layer: {"sparsity": achieved}}."""
    report = {}
    for name, module in target_linears(model):
        w = weight_matrix(module)
        mask = magnitude_mask(w, spec.sparsity, spec.nm)
        w.mul_(mask)
        report[name] = {"sparsity": 1.0 - mask.float().mean().item()}
    return report

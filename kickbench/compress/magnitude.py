"""Magnitude pruning: drop the smallest |W| of each weight matrix (or in each N:M group)."""

from __future__ import annotations

import torch

from .layers import target_linears, weight_matrix
from .masks import mask_for
from .registry import Method, register
from .spec import PRUNING_FIELDS, CompressionSpec, check_pruning

VERSION = 1  # bump when a change can alter this compressor's numbers (kickbench/versions.py)


def magnitude_mask(w: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    return mask_for(w.abs().float(), sparsity, nm, per_row=False)


def prune(model, spec: CompressionSpec, calibration=None, layer_spec=None) -> dict[str, dict]:
    """Prune every target linear in place; returns {layer: {"sparsity": achieved}}."""
    report = {}
    for name, module in target_linears(model):
        w = weight_matrix(module)
        level = layer_spec(name) if layer_spec else spec
        mask = magnitude_mask(w, level.sparsity, level.nm)
        w.mul_(mask)
        report[name] = {"sparsity": 1.0 - mask.float().mean().item()}
    return report


register(Method("magnitude", "pruning", "sparsity", "smallest |W| of each matrix (or N:M group)",
                apply=prune, fields=PRUNING_FIELDS, check=check_pruning))

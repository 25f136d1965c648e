"""Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, prune the lowest within each output row."""

from __future__ import annotations

import torch

from .calibration import layerwise
from .masks import mask_for
from .registry import Method, register
from .spec import PRUNING_FIELDS, check_pruning

VERSION = 1  # bump when a change can alter this compressor's numbers (kickbench/versions.py)


class InputNorms:
    """Accumulates the squared L2 norm of every input feature over the calibration tokens."""

    def __init__(self, cols: int):
        self.sq = torch.zeros(cols, dtype=torch.float32)

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.sq = self.sq.to(x.device) + (x * x).sum(dim=0)


def wanda_scores(w: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    return w.abs().float() * sq_norms.sqrt()[None, :]


def wanda_mask(w: torch.Tensor, sq_norms: torch.Tensor, sparsity: float,
               nm: tuple[int, int] | None) -> torch.Tensor:
    """Keep-mask: per output row (unstructured) or per N:M group of inputs."""
    return mask_for(wanda_scores(w, sq_norms), sparsity, nm, per_row=True)


def prune_layer(w: torch.Tensor, stats: InputNorms, spec) -> dict:
    """Prune one [out, in] weight view in place."""
    mask = wanda_mask(w, stats.sq, spec.sparsity, spec.nm)
    w.mul_(mask)
    return {"sparsity": 1.0 - mask.float().mean().item()}


register(Method("wanda", "pruning", "sparsity", "Wanda: |W| x input norm, per output row",
                apply=layerwise(InputNorms, prune_layer), fields=PRUNING_FIELDS,
                calibrated=True, check=check_pruning))

"""Pure tensor maths for pruning masks. A mask is a bool tensor: True = keep the weight."""

from __future__ import annotations

import torch


def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool = False) -> torch.Tensor:
    """Drop exactly round(sparsity * n) lowest scores, over the matrix or within each row."""
    rows = scores.reshape(scores.shape[0], -1) if per_row else scores.reshape(1, -1)
    k = int(round(sparsity * rows.shape[1]))
    keep = torch.ones_like(rows, dtype=torch.bool)
    if k > 0:
        drop = torch.topk(rows, k, dim=1, largest=False).indices
        keep.scatter_(1, drop, False)
    return keep.reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n highest scores in every group of m consecutive inputs (last dim) of each row."""
    cols = scores.shape[-1]
    if cols % m:
        raise ValueError(f"N:M pattern {n}:{m} needs the input width to be a multiple of {m}, "
                         f"got {cols}")
    groups = scores.reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    return keep.reshape(scores.shape)


def mask_for(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None,
             per_row: bool = False) -> torch.Tensor:
    """The mask of a spec: N:M when nm is given, else unstructured at `sparsity`."""
    return nm_mask(scores, *nm) if nm else unstructured_mask(scores, sparsity, per_row)

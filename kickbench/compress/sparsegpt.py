"""SparseGPT (Frantar & Alistarh 2023): prune with OBS weight updates from the layer Hessian.

Follows IST-DASLab's sparsegpt.py: H = 2 X X^T / n, dead inputs zeroed, diagonal damping,
upper Cholesky factor of H^-1 shared by all rows, lazy blocks of 128 columns, mask chosen per
block (adaptive) or per N:M group.
"""

from __future__ import annotations

import torch

from .hessian import Hessian, inverse_cholesky, without_dead_inputs
from .masks import nm_mask, unstructured_mask


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float,
                    nm: tuple[int, int] | None, damping: float = 0.01,
                    blocksize: int = 128) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Pure maths on [rows, cols] W and [cols, cols] H. Returns (new W, keep-mask, damping)."""
    W, H = without_dead_inputs(W, H)
    Hinv, used = inverse_cholesky(H, damping)
    rows, cols = W.shape
    keep = torch.ones_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        Err1 = torch.zeros_like(W1)
        if nm is None:  # adaptive mask: the block's lowest w^2 / [H^-1]_jj^2
            keep1 = unstructured_mask(W1**2 / d[None, :] ** 2, sparsity)
        else:
            keep1 = torch.ones_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                g = slice(i, i + nm[1])
                keep1[:, g] = nm_mask(W1[:, g] ** 2 / d[None, g] ** 2, *nm)
            w = W1[:, i]
            q = w * keep1[:, i]
            err = (w - q) / d[i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        keep[:, i1:i2] = keep1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W * keep, keep, used


def prune_layer(w: torch.Tensor, stats: Hessian, spec) -> dict:
    """Prune one [out, in] weight view in place with OBS updates."""
    if spec.nm and w.shape[1] % spec.nm[1]:
        raise ValueError(f"N:M {spec.pattern} needs the input width {w.shape[1]} to be a "
                         f"multiple of {spec.nm[1]}")
    new, keep, used = sparsegpt_prune(w, stats.H.to(w.device), spec.sparsity, spec.nm,
                                      spec.damping)
    w.copy_(new.to(w.dtype))
    out = {"sparsity": 1.0 - keep.float().mean().item()}
    if used != spec.damping:
        out["damping_raised_to"] = used  # the Hessian was not positive definite
    return out

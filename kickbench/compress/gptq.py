"""GPTQ (Frantar et al. 2022): quantize column by column, pushing each column's rounding error
onto the columns not yet quantized through the inverse layer Hessian.

Follows IST-DASLab's gptq.py: dead inputs zeroed, diagonal damping, upper Cholesky factor of
H^-1, lazy blocks, optional act-order (columns by decreasing H_jj). Two deliberate
differences: a group's grid is computed from the group's *updated* weights (the reference
reads them before the in-block updates), and blocks are a multiple of the group size so a
group never straddles two blocks. With act-order, groups are consecutive in the permuted
order, as in the reference (desc_act without static groups).
"""

from __future__ import annotations

import torch

from .hessian import Hessian, inverse_cholesky, without_dead_inputs
from .quant import grid_for, quantize


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int, group_size: int | None,
                  symmetric: bool, act_order: bool = False, damping: float = 0.01,
                  blocksize: int = 128) -> tuple[torch.Tensor, float]:
    """Pure maths on [rows, cols] W and [cols, cols] H. Returns (dequantized W, damping used)."""
    W, H = without_dead_inputs(W, H)
    rows, cols = W.shape
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    Hinv, used = inverse_cholesky(H, damping)
    g = group_size or cols
    if group_size:
        blocksize = max(blocksize // g, 1) * g
    grid = None if group_size else grid_for(W, bits, symmetric)
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if group_size and (i1 + i) % g == 0:
                grid = grid_for(W1[:, i:i + g], bits, symmetric)
            w, d = W1[:, i], Hinv1[i, i]
            q = quantize(w[:, None], grid)[:, 0]
            Q[:, i1 + i] = q
            err = (w - q) / d
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q, used


def quantize_layer(w: torch.Tensor, stats: Hessian, spec) -> dict:
    """Quantize one [out, in] weight view in place (fake quantization)."""
    new, used = gptq_quantize(w, stats.H.to(w.device), spec.bits, spec.group_size,
                              spec.symmetric, spec.act_order, spec.damping)
    w.copy_(new.to(w.dtype))
    out = {"bits": spec.bits}
    if used != spec.damping:
        out["damping_raised_to"] = used  # the Hessian was not positive definite
    return out

"""GPTQ (Frantar et al. 2022): quantize column by column, pushing each column's rounding error
onto the columns not yet quantized through the inverse layer Hessian.

Follows IST-DASLab's gptq.py: dead inputs zeroed, diagonal damping, upper Cholesky factor of
H^-1, lazy blocks, optional act-order (columns by decreasing H_jj). Two deliberate
differences: a group's grid is computed from the group's *updated* weights (the reference
reads them before the in-block updates), and lazy batches (obs.sweep) start at group starts.
With act-order, groups are consecutive in the permuted order, as in the reference (desc_act
without static groups).
"""

from __future__ import annotations

import torch

from .hessian import Hessian, inverse_cholesky, without_dead_inputs
from .obs import _array, sub_block, sweep, window
from .quant import grid_for


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int, group_size: int | None,
                  symmetric: bool, act_order: bool = False,
                  damping: float = 0.01) -> tuple[torch.Tensor, float]:
    """Pure maths on [rows, cols] W and [cols, cols] H. Returns (dequantized W, damping used)."""
    W, H = without_dead_inputs(W, H)
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    U, used = inverse_cholesky(H, damping)
    g = group_size or W.shape[1]
    grid = [None, None, 0]  # scale, zero ([rows] arrays), maxq of the current group

    def set_grid(cols):
        gr = grid_for(cols, bits, symmetric)
        grid[:] = _array(gr.scale[:, 0].contiguous()), _array(gr.zero[:, 0].contiguous()), gr.maxq

    if not group_size:
        set_grid(W)

    def fix(j, w, block, W):
        if group_size and j % g == 0:
            set_grid(window(j, g, block, W))
        scale, zero, maxq = grid
        return scale * (((w / scale).round() + zero).clip(0, maxq) - zero)

    sweep(W, U, fix, sub_block(group_size))
    if perm is not None:
        W = W[:, torch.argsort(perm)]
    return W, used


def quantize_layers(ws: list[torch.Tensor], stats: Hessian, spec) -> list[dict]:
    """Quantize [out, in] weight views that share one input (q/k/v, gate/up) in place.

    Given H, GPTQ treats every row on its own (row grids, shared U), so the layers' rows are
    stacked and swept once: the same result as one sweep per layer, for fewer column steps.
    """
    W = torch.cat([w.float() for w in ws])
    new, used = gptq_quantize(W, stats.H.to(W.device), spec.bits, spec.group_size,
                              spec.symmetric, spec.act_order, spec.damping)
    for w, part in zip(ws, new.split([w.shape[0] for w in ws])):
        w.copy_(part.to(w.dtype))
    out = {"bits": spec.bits}
    if used != spec.damping:
        out["damping_raised_to"] = used  # the Hessian was not positive definite
    return [dict(out) for _ in ws]

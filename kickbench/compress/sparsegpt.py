"""SparseGPT (Frantar & Alistarh 2023): prune with OBS weight updates from the layer Hessian.

Follows IST-DASLab's sparsegpt.py: H = 2 X X^T / n, dead inputs zeroed, diagonal damping,
upper Cholesky factor of H^-1 shared by all rows, mask chosen per block of 128 columns
(adaptive) or per N:M group, OBS updates in lazy batches (obs.sweep).
"""

from __future__ import annotations

import torch

from .calibration import layerwise
from .hessian import Hessian, inverse_cholesky, without_dead_inputs
from .masks import nm_mask, unstructured_mask
from .obs import _array, sub_block, sweep, window
from .registry import Method, register
from .spec import PRUNING_FIELDS, check_pruning

VERSION = 1  # bump when a change can alter this compressor's numbers (kickbench/versions.py)


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float,
                    nm: tuple[int, int] | None, damping: float = 0.01,
                    blocksize: int = 128) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Pure maths on [rows, cols] W and [cols, cols] H. Returns (new W, keep-mask, damping)."""
    W, H = without_dead_inputs(W, H)
    U, used = inverse_cholesky(H, damping)
    d2 = torch.diag(U) ** 2
    keepT = torch.ones(W.shape[1], W.shape[0], dtype=W.dtype, device=W.device)  # 1 = keep
    k = _array(keepT)
    n_m = nm or (None, None)

    def fix(j, w, block, W):
        if nm is None and j % blocksize == 0:  # adaptive mask: the block's lowest w^2 / U_jj^2
            cols = window(j, blocksize, block, W)
            keepT[j:j + cols.shape[1]] = unstructured_mask(cols**2 / d2[j:j + cols.shape[1]], sparsity).T
        elif nm is not None and j % n_m[1] == 0:
            cols = window(j, n_m[1], block, W)
            keepT[j:j + n_m[1]] = nm_mask(cols**2 / d2[j:j + n_m[1]], *nm).T
        return w * k[j]

    sweep(W, U, fix, sub_block(blocksize if nm is None else n_m[1]))
    keep = keepT.T.bool()
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


register(Method("sparsegpt", "pruning", description="SparseGPT: OBS updates from the layer Hessian",
                apply=layerwise(Hessian, prune_layer), fields=(*PRUNING_FIELDS, "damping"),
                calibrated=True, check=check_pruning, level="sparsity"))

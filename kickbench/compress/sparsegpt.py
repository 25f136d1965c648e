"""SparseGPT (Frantar & Alistarh 2023): prune with OBS weight updates from the layer Hessian.

Follows IST-DASLab's sparsegpt.py: H = 2 X X^T / n, dead inputs zeroed, diagonal damping,
upper Cholesky factor of H^-1 shared by all rows, lazy blocks of 128 columns, mask chosen per
block (adaptive) or per N:M group.
"""

from __future__ import annotations

import math

import torch

from .masks import nm_mask, unstructured_mask


class Hessian:
    """Running H = 2/n * sum x x^T over the calibration tokens (float32)."""

    def __init__(self, cols: int):
        self.H = torch.zeros(cols, cols, dtype=torch.float32)
        self.n = 0

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        t = x.shape[0]
        self.H = self.H.to(x.device) * (self.n / (self.n + t))
        self.n += t
        x = x * math.sqrt(2 / self.n)
        self.H += x.T @ x


def inverse_cholesky(H: torch.Tensor, damping: float, max_tries: int = 6) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + damp*mean(diag) I)^-1; raises damping 10x until H is PD.

    Returns the factor and the relative damping that worked.
    """
    mean_diag = torch.diag(H).mean()
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for attempt in range(max_tries):
        damp = damping * 10**attempt
        L, info = torch.linalg.cholesky_ex(H + damp * mean_diag * eye)
        if info == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info == 0:
                return U, damp
    raise torch.linalg.LinAlgError(f"Hessian not positive definite even with damping {damp:g}")


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float,
                    nm: tuple[int, int] | None, damping: float = 0.01,
                    blocksize: int = 128) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Pure maths on [rows, cols] W and [cols, cols] H. Returns (new W, keep-mask, damping)."""
    W, H = W.float().clone(), H.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
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

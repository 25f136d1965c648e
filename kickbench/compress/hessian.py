"""The layer Hessian H = 2 X X^T / n shared by SparseGPT and GPTQ, and its damped inverse."""

from __future__ import annotations

import math

import torch


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


def without_dead_inputs(W: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float copies of W and H where inputs never seen in calibration (H_jj = 0) get H_jj = 1
    and zero weights, so H can be inverted and those columns cost nothing."""
    W, H = W.float().clone(), H.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    return W, H

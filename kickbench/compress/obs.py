"""The column sweep shared by SparseGPT and GPTQ: fix one column at a time and push its error
onto the columns not yet fixed through the upper Cholesky factor U of H^-1 (OBS updates).

Lazy batches: a sub-block of `sub` columns is swept with rank-1 updates inside it, then one
matmul carries its errors to every later column, so the result does not depend on `sub`
(up to float rounding). The per-column loop is dominated by per-operation overhead, so on CPU
it runs on numpy views of the same memory (about 4x faster here than torch for 576-row
columns); elsewhere on torch tensors. The loop body only uses operations both support.
"""

from __future__ import annotations

from typing import Callable

import torch

SUB = 32  # columns per lazy batch


def _array(t: torch.Tensor):
    return t.numpy() if t.device.type == "cpu" else t


def sweep(W: torch.Tensor, U: torch.Tensor, fix: Callable, sub: int = SUB) -> torch.Tensor:
    """Sweep the columns of float32 W ([rows, cols], edited in place) left to right.

    fix(j, w, block, W) returns column j's final value given its current value w ([rows]);
    block holds the current sub-block's columns from j on, transposed ([k, rows]); W is the
    full matrix, in sync with block at a sub-block's start only. Callers choose windows
    (see `window`) so that one starting mid-sub-block stays inside it.
    """
    cols = W.shape[1]
    for i1 in range(0, cols, sub):
        i2 = min(i1 + sub, cols)
        blockT = W[:, i1:i2].T.contiguous()
        errT = torch.zeros_like(blockT)
        b, e, u = _array(blockT), _array(errT), _array(U[i1:i2, i1:i2].contiguous())
        for i in range(i2 - i1):
            w = b[i]
            q = fix(i1 + i, w, b[i:], W)
            err = (w - q) / u[i, i]
            b[i:] -= u[i, i:, None] * err[None, :]
            b[i] = q
            e[i] = err
        W[:, i1:i2] = blockT.T
        W[:, i2:] -= errT.T @ U[i1:i2, i2:]
    return W


def sub_block(*windows: int | None) -> int:
    """A lazy-batch size whose boundaries fall on the start of every window larger than it
    and that holds every smaller window whole (windows: mask blocks, N:M groups, quant groups)."""
    sub = SUB
    for k in filter(None, windows):
        if k % sub and sub % k:
            sub = k
    return sub


def window(j: int, k: int, block, W: torch.Tensor) -> torch.Tensor:
    """Columns j..j+k as a torch [rows, k] view of their current values (see sweep)."""
    if len(block) >= min(k, W.shape[1] - j):
        return torch.as_tensor(block[:k]).T
    return W[:, j:j + k]

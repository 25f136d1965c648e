"""Pure tensor maths for integer weight quantization: grids, round to nearest, packed size.

A weight row is split into groups of `group_size` inputs (None: the whole row, i.e. per
output channel). Each group gets a scale and, when asymmetric, an integer zero point:
q = clamp(round(w / scale) + zero, 0, 2^bits - 1), w' = scale * (q - zero). As in the GPTQ
reference code the range always contains 0; a symmetric grid centres it at 2^(bits-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCALE_BITS = 16  # scales stored as fp16, as in GPTQ/AWQ checkpoints


@dataclass(frozen=True)
class Grid:
    """Per-row quantization grid for one group of columns: scale and zero are [rows, 1]."""

    scale: torch.Tensor
    zero: torch.Tensor
    maxq: int


def grid_for(w: torch.Tensor, bits: int, symmetric: bool) -> Grid:
    """The min-max grid of each row of w ([rows, cols] -> one scale/zero per row)."""
    maxq = 2**bits - 1
    w = w.float()
    lo = torch.minimum(w.min(dim=1, keepdim=True).values, torch.zeros(1, device=w.device))
    hi = torch.maximum(w.max(dim=1, keepdim=True).values, torch.zeros(1, device=w.device))
    if symmetric:
        hi = torch.maximum(lo.abs(), hi)
        lo = -hi
    flat = (lo == 0) & (hi == 0)  # an all-zero row: any grid reproduces it
    lo, hi = torch.where(flat, -1.0, lo), torch.where(flat, 1.0, hi)
    scale = (hi - lo) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if symmetric else torch.round(-lo / scale)
    return Grid(scale, zero, maxq)


def quantize(w: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Round w ([rows, k]) onto the grid and map back to floats (fake quantization)."""
    q = torch.clamp(torch.round(w.float() / grid.scale) + grid.zero, 0, grid.maxq)
    return grid.scale * (q - grid.zero)


def group_bounds(cols: int, group_size: int | None) -> list[tuple[int, int]]:
    """Column ranges of the groups of a row; the last one is shorter when g does not divide."""
    g = group_size or cols
    return [(i, min(i + g, cols)) for i in range(0, cols, g)]


def rtn(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """Round-to-nearest quantization of a [rows, cols] matrix, per channel or per group."""
    out = torch.empty_like(w, dtype=torch.float32)
    for a, b in group_bounds(w.shape[1], group_size):
        out[:, a:b] = quantize(w[:, a:b], grid_for(w[:, a:b], bits, symmetric))
    return out


def packed_bits(rows: int, cols: int, bits: int, group_size: int | None, symmetric: bool) -> int:
    """Bits to store a quantized [rows, cols] matrix: the codes, an fp16 scale per group and,
    when asymmetric, a `bits`-wide zero point per group (GPTQ's packed qzeros)."""
    groups = rows * len(group_bounds(cols, group_size))
    return rows * cols * bits + groups * (SCALE_BITS + (0 if symmetric else bits))

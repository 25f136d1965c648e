"""AWQ (Lin et al. 2023): activation-aware per-input-channel scales, then round to nearest.

Follows mit-han-lab/llm-awq (auto_scale.py, auto_clip.py). For the linears fed one input
(q/k/v, gate/up, o_proj, down_proj) the scales are s = m^alpha / sqrt(max * min) with m the
mean |x| per input channel, for alpha on a grid over [0, 1); the alpha kept is the one whose
Q(W s) / s gives the least mean squared output error. Then, optionally, a clipping range per
output row and group is searched on the scaled weights (max |w| shrunk by 1 - i/20 for
i < 10, least error of that group's partial output), as auto_clip.py does.

Differences from the reference, stated:
- the scale's error is measured on the outputs of the linears sharing the input (stacked),
  not on the output of the block or attention/MLP module they feed; both errors use a
  uniform sample of SAMPLE_ROWS calibration tokens (m is averaged over all of them);
- weights are fake-quantized: the final weight is Q(clip(W s)) / s in the model's dtype.
  llm-awq folds s into the previous op (norm or linear) instead; with fake quantization,
  dividing back gives the same outputs without touching any other layer;
- clipping is searched for every linear; llm-awq skips q_proj and k_proj (their error
  reaches the output through q k^T), which needs layer names the group function is not given.
"""

from __future__ import annotations

import torch

from .calibration import layerwise
from .quant import grid_for, group_bounds, quantize, rtn
from .registry import Method, Option, register
from .spec import GRID_FIELDS, check_grid

VERSION = 1  # bump when a change can alter this compressor's numbers (kickbench/versions.py)

SAMPLE_ROWS = 512   # calibration tokens kept for the error of a candidate (llm-awq: 512 for clip)
CLIP_GRID = 20      # auto_clip.py: shrink max |w| by i / 20 ...
MAX_SHRINK = 0.5    # ... for i < 20 * 0.5


class Activations:
    """Collector: mean |x| per input channel over all tokens, and a uniform sample of rows."""

    def __init__(self, cols: int, rows: int = SAMPLE_ROWS, seed: int = 0):
        self.abs_sum, self.n = torch.zeros(cols), 0
        self.x, self.keys = torch.zeros(0, cols), torch.zeros(0)
        self.rows, self.gen = rows, torch.Generator().manual_seed(seed)

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.abs_sum = self.abs_sum.to(x.device) + x.abs().sum(0)
        self.n += x.shape[0]
        # each row draws a random key and the smallest keys are kept: a uniform sample of
        # every token seen, reproducible from the seed, whatever the batching
        keys = torch.cat([self.keys, torch.rand(x.shape[0], generator=self.gen)])
        keep = torch.argsort(keys)[:self.rows]
        self.keys, self.x = keys[keep], torch.cat([self.x.to(x.device), x])[keep.to(x.device)]

    @property
    def mean_abs(self) -> torch.Tensor:
        return self.abs_sum / max(self.n, 1)


def awq_scales(mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    """llm-awq's scales m^alpha, normalised so that max * min = 1 (alpha = 0: all ones)."""
    s = mean_abs.float().pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def output_error(x: torch.Tensor, w: torch.Tensor, w2: torch.Tensor) -> float:
    """Mean over tokens and outputs of (x W^T - x W2^T)^2."""
    return (x @ (w - w2).T).pow(2).mean().item()


def search_scale(mean_abs, x, w, bits, group_size, symmetric, n_grid=20):
    """(alpha, s, error) of the alpha in {i / n_grid} whose Q(W s) / s errs least on x.

    w is [out, in] (the stacked linears sharing input x [tokens, in])."""
    best = (0.0, None, float("inf"))
    for i in range(n_grid):
        s = awq_scales(mean_abs, i / n_grid)
        err = output_error(x, w, rtn(w * s, bits, group_size, symmetric) / s)
        if err < best[2]:  # strict: ties keep the smaller alpha (alpha = 0 is plain RTN)
            best = (i / n_grid, s, err)
    return best


def clip_group(w, x, bits, symmetric, n_grid=CLIP_GRID, max_shrink=MAX_SHRINK):
    """Per row of one group's w [rows, g] (inputs x [tokens, g]): the ratio r of max |w| to
    clamp to that gives the least mean squared partial output error, and that error."""
    ref, top = x @ w.T, w.abs().amax(dim=1, keepdim=True)
    best_r, best_e = torch.ones_like(top[:, 0]), torch.full_like(top[:, 0], float("inf"))
    for i in range(int(n_grid * max_shrink)):  # i = 0: no clipping
        r = 1 - i / n_grid
        c = torch.clamp(w, -top * r, top * r)  # symmetric range, as auto_clip.py
        err = (x @ quantize(c, grid_for(c, bits, symmetric)).T - ref).pow(2).mean(0)
        better = err < best_e
        best_r, best_e = torch.where(better, r, best_r), torch.where(better, err, best_e)
    return best_r, best_e


def search_clip(x, w, bits, group_size, symmetric, **grid):
    """Clip ratios [rows, groups] for w [rows, in] and their summed per-group error [rows]."""
    found = [clip_group(w[:, a:b], x[:, a:b], bits, symmetric, **grid)
             for a, b in group_bounds(w.shape[1], group_size)]
    return torch.stack([r for r, _ in found], 1), sum(e for _, e in found)


def clipped(w, ratios, group_size):
    """w with each row's group clamped to +-ratio * its max |w|."""
    out = w.clone()
    for k, (a, b) in enumerate(group_bounds(w.shape[1], group_size)):
        top = w[:, a:b].abs().amax(dim=1, keepdim=True) * ratios[:, k:k + 1]
        out[:, a:b] = torch.clamp(w[:, a:b], -top, top)
    return out


def awq_quantize(w, mean_abs, x, bits, group_size, symmetric, n_grid=20, clip=True):
    """Pure maths: (Q(clip(W s)) / s, alpha, clip ratios [rows, groups] or None)."""
    w, x = w.float(), x.float()
    alpha, s, _ = search_scale(mean_abs, x, w, bits, group_size, symmetric, n_grid)
    ws, ratios = w * s, None
    if clip:  # searched on the scaled problem: (x / s) (W s)^T = x W^T
        ratios, _ = search_clip(x / s, ws, bits, group_size, symmetric)
        ws = clipped(ws, ratios, group_size)
    return rtn(ws, bits, group_size, symmetric) / s, alpha, ratios


def quantize_group(ws: list[torch.Tensor], stats: Activations, spec) -> list[dict]:
    """Quantize the [out, in] views fed one input in place: one alpha for all (one input,
    one scale); clipping is per row, so stacking the rows changes nothing."""
    w = torch.cat([v.float() for v in ws])
    new, alpha, ratios = awq_quantize(w, stats.mean_abs.to(w.device), stats.x.to(w.device),
                                      spec.bits, spec.group_size, spec.symmetric,
                                      spec.option("awq_grid"), spec.option("awq_clip"))
    sizes, out = [v.shape[0] for v in ws], []
    parts = ratios.split(sizes) if ratios is not None else [None] * len(ws)
    for v, part, r in zip(ws, new.split(sizes), parts):
        v.copy_(part.to(v.dtype))
        out.append({"bits": spec.bits, "alpha": alpha,
                    **({"clip": r.mean().item()} if r is not None else {})})
    return out


def _check_grid_points(n) -> str | None:
    return None if n >= 1 else "needs at least 1 point (1: alpha = 0, plain RTN)"


register(Method("awq", "quantization", "bits",
                "AWQ: activation-aware per-channel scales (+ clipping) before rounding",
                apply=layerwise(Activations, quantize_group, stacked=True), fields=GRID_FIELDS,
                options=(Option("awq_grid", 20, "AWQ: points of the scale-exponent grid over "
                                "[0, 1)", check=_check_grid_points),
                         Option("awq_clip", True, "AWQ: search a clipping range per group")),
                calibrated=True, check=check_grid))

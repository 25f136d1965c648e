"""GPTQ (Frantar et al. 2022): quantize column by column, pushing each column's rounding error
onto the columns not yet quantized through the inverse layer Hessian.

Follows IST-DASLab's gptq.py: dead inputs zeroed, diagonal damping, upper Cholesky factor of
H^-1, lazy blocks, optional act-order (columns by decreasing H_jj). Group grids, option
`gptq_groups`:

- "static" (default; IST's `--static-groups`, llm-compressor): every group's grid is computed
  from the weights before the sweep, groups being runs of g columns in their original order;
  with act-order a column keeps the grid of its original group (IST gptq.py: `groups[perm[idx]
  // groupsize]`).
- "dynamic" (IST's default, the GPTQ code LLM-KICK ran): a group's grid is computed when the
  sweep reaches its first column, from W as the reference holds it then: updated by every
  earlier 128-column block, not yet by the earlier columns of the current block
  (`find_params(W[:, j:j + groupsize])` reads W, not the block's working copy). With
  act-order, groups are runs of g columns in the permuted order.

Measured on SmolLM2 at w3 g64 (before act-order followed IST): WikiText-2 perplexity 121.4
with mid-sweep grids, 110.5 with static ones.
"""

from __future__ import annotations

import torch

from .calibration import layerwise
from .hessian import Hessian, inverse_cholesky, without_dead_inputs
from .obs import _array, sweep
from .quant import grid_for, group_bounds
from .registry import Method, Option, register
from .spec import GRID_FIELDS, check_grid

VERSION = 2  # bump when a change can alter this compressor's numbers (kickbench/versions.py)


GROUPS = ("static", "dynamic")
REFERENCE_BLOCK = 128  # IST fasterquant's blocksize: a dynamic grid sees W as of its block start


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int, group_size: int | None,
                  symmetric: bool, act_order: bool = False, damping: float = 0.01,
                  groups: str = "static") -> tuple[torch.Tensor, float]:
    """Pure maths on [rows, cols] W and [cols, cols] H. Returns (dequantized W, damping used)."""
    if groups not in GROUPS:
        raise ValueError(f"gptq groups must be one of {GROUPS}, got {groups!r}")
    W, H = without_dead_inputs(W, H)
    cols = W.shape[1]
    g = group_size or cols
    bounds = group_bounds(cols, group_size)
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else None
    grids: dict[int, tuple] = {}  # group index -> (scale, zero) as arrays of [rows]

    def keep(k, w):
        gr = grid_for(w, bits, symmetric)
        grids[k] = (_array(gr.scale[:, 0].contiguous()), _array(gr.zero[:, 0].contiguous()))

    if groups == "static":  # before the permutation: groups of original columns
        for k, (a, b) in enumerate(bounds):
            keep(k, W[:, a:b])
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    U, used = inverse_cholesky(H, damping)
    maxq = 2**bits - 1
    original = perm.tolist() if perm is not None else None

    def fix(j, w, _block, W_):
        if groups == "static":
            k = (original[j] if original else j) // g
        else:
            k = j // g
            if j % REFERENCE_BLOCK == 0:  # W_ is in sync from j on: the reference block's start
                for a in range(j, min(j + REFERENCE_BLOCK, cols)):
                    if a % g == 0:
                        keep(a // g, W_[:, a:a + g])
        scale, zero = grids[k]
        return scale * (((w / scale).round() + zero).clip(0, maxq) - zero)

    sweep(W, U, fix)
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
                              spec.symmetric, spec.act_order, spec.damping, groups_of(spec))
    for w, part in zip(ws, new.split([w.shape[0] for w in ws])):
        w.copy_(part.to(w.dtype))
    out = {"bits": spec.bits}
    if used != spec.damping:
        out["damping_raised_to"] = used  # the Hessian was not positive definite
    return [dict(out) for _ in ws]


def groups_of(spec) -> str:
    return dict(spec.options).get("gptq_groups", "static")


def check(spec) -> dict:
    """The grid's checks; the default `gptq_groups` is left out of the options (so out of the
    result key): GPTQ keys from before the option existed stay valid."""
    out = check_grid(spec)
    options = dict(spec.options)
    if options.get("gptq_groups") == "static":
        del options["gptq_groups"]
        out["options"] = tuple(sorted(options.items()))
    return out


def setting(spec) -> str:
    """The quantizers' setting (as spec.py writes it), plus dynamic group grids when chosen."""
    return " ".join(filter(None, [f"g{spec.group_size}" if spec.group_size else "per-channel",
                                  "sym" if spec.symmetric else "",
                                  "act-order" if spec.act_order else "",
                                  "dynamic-groups" if groups_of(spec) == "dynamic" else ""]))


GROUPS_OPTION = Option(
    "gptq_groups", "static",
    "GPTQ group grids: static (computed before the sweep, original column order; IST "
    "--static-groups, llm-compressor) or dynamic (computed when the sweep reaches the group, "
    "from updated weights; IST's default, as LLM-KICK ran it)",
    check=lambda v: None if v in GROUPS else f"use one of {', '.join(GROUPS)}")

register(Method("gptq", "quantization", "bits", "GPTQ: column by column, error pushed through H^-1",
                apply=layerwise(Hessian, quantize_layers, stacked=True),
                fields=(*GRID_FIELDS, "act_order", "damping"), options=(GROUPS_OPTION,),
                calibrated=True, check=check, setting=setting))

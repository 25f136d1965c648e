"""Which weights compressors touch: the linear layers inside the decoder blocks."""

from __future__ import annotations

import torch
from torch import nn


def is_linear(module: nn.Module) -> bool:
    # GPT-2 uses transformers' Conv1D: a linear layer storing its weight as [in, out].
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder blocks (model.layers, transformer.h, decoder.layers, ...)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)
             and any(is_linear(x) for x in m[0].modules())]
    if not lists:
        raise ValueError(f"cannot find decoder blocks in {type(model).__name__}")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def block_linears(model: nn.Module) -> list[tuple[nn.Module, dict[str, nn.Module]]]:
    """(block, {qualified name: linear}) for every decoder block, in order."""
    blocks = decoder_blocks(model)
    prefix = next(n for n, m in model.named_modules() if m is blocks)
    return [(block, {f"{prefix}.{i}.{name}": mod for name, mod in block.named_modules()
                     if is_linear(mod)}) for i, block in enumerate(blocks)]


def target_linears(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every linear layer in the decoder blocks.

    Embeddings and lm_head live outside the blocks, so tied embeddings are never touched.
    """
    return [item for _, linears in block_linears(model) for item in linears.items()]


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as [out, in] (a view, so in-place edits reach the module)."""
    w = module.weight.data
    return w.t() if type(module).__name__ == "Conv1D" else w

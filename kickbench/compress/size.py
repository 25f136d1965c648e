"""Storage size of a compressed model, so pruning and quantization share one x-axis.

Conventions (stated in reports): the reference is the model with every parameter in 16 bits;
parameters outside the compressed linears (embeddings, norms, lm_head) stay 16-bit. Pruned
layers store their nonzero weights in 16 bits, plus ceil(log2 M) index bits per kept weight
for N:M (2:4 is NVIDIA's 2-bit metadata); unstructured index overhead is not counted, the
optimistic convention of the pruning papers. Quantized layers count their packed codes,
fp16 scales and zero points (quant.packed_bits); a method with its own layout (bitsandbytes)
gives Method.size_bits.
"""

from __future__ import annotations

import math

import torch

from ..models import unique_parameters
from .layers import target_linears, weight_matrix
from .quant import packed_bits
from .spec import CompressionSpec

DENSE_BITS = 16


def layer_bits(spec: CompressionSpec, w: torch.Tensor) -> int:
    """Bits to store one compressed [out, in] weight matrix (w: after compression)."""
    rows, cols = w.shape
    if spec.is_dense:
        return rows * cols * DENSE_BITS
    if spec.entry.size_bits:  # a method with a layout of its own (bitsandbytes)
        return spec.entry.size_bits(spec, w)
    if spec.family == "quantization":
        return packed_bits(rows, cols, spec.bits, spec.group_size, spec.symmetric)
    kept = int(torch.count_nonzero(w).item())
    index = math.ceil(math.log2(spec.nm[1])) if spec.nm else 0
    return kept * (DENSE_BITS + index)


def model_size(model: torch.nn.Module, spec: CompressionSpec) -> dict:
    """bits per weight of the compressed linears and the whole model's size relative to an
    all-16-bit copy; call on the compressed model (on the dense one for bitsandbytes)."""
    linears = [weight_matrix(m) for _, m in target_linears(model)]
    layer_total = sum(layer_bits(spec, w) for w in linears)
    layer_params = sum(w.numel() for w in linears)
    params = sum(p.numel() for p in unique_parameters(model))  # tied weights count once
    total = layer_total + (params - layer_params) * DENSE_BITS
    return {"bits_per_weight": layer_total / layer_params,
            "size_fraction": total / (params * DENSE_BITS),
            "size_mb": total / 8 / 1e6, "dense_16bit_mb": params * DENSE_BITS / 8 / 1e6}

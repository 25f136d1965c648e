"""Round-to-nearest weight quantization of every target linear (fake quantization)."""

from __future__ import annotations

from .layers import target_linears, weight_matrix
from .quant import rtn
from .spec import CompressionSpec


def quantize(model, spec: CompressionSpec, **_) -> dict[str, dict]:
    """Quantize-dequantize every target linear in place; returns {layer: {"bits": ...}}."""
    report = {}
    for name, module in target_linears(model):
        w = weight_matrix(module)
        w.copy_(rtn(w, spec.bits, spec.group_size, spec.symmetric).to(w.dtype))
        report[name] = {"bits": spec.bits}
    return report

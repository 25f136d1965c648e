"""Round-to-nearest weight quantization of every target linear (fake quantization)."""

from __future__ import annotations

from .layers import target_linears, weight_matrix
from .quant import rtn
from .registry import Method, register
from .spec import GRID_FIELDS, CompressionSpec, check_grid

VERSION = 1  # bump when a change can alter this compressor's numbers (kickbench/versions.py)


def quantize(model, spec: CompressionSpec, calibration=None, layer_spec=None) -> dict[str, dict]:
    """Quantize-dequantize every target linear in place; returns {layer: {"bits": ...}}."""
    report = {}
    for name, module in target_linears(model):
        w = weight_matrix(module)
        w.copy_(rtn(w, spec.bits, spec.group_size, spec.symmetric).to(w.dtype))
        report[name] = {"bits": spec.bits}
    return report


register(Method("rtn", "quantization", "bits", "round to nearest on a min-max grid",
                apply=quantize, fields=GRID_FIELDS, check=check_grid))

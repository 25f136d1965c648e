"""Compression methods behind one contract (registry.py): each method's file registers it;
`apply`, `applied` and `compressed` run any of them.

Pruning and weight quantization edit the loaded model in place and are undone by `applied`;
a loaded kernel (bitsandbytes) quantizes while loading, so `compressed` loads a second model.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

from .. import models
from . import calibration as calib
from . import registry
# each import below registers its methods (registry.register in the method's own file)
from . import magnitude, wanda, sparsegpt, rtn, gptq, awq, bnb, owl  # noqa: F401,E401
from .layers import target_linears, weight_matrix
from .quant import group_bounds
from .registry import ALLOCATORS, METHODS
from .size import model_size
from .spec import CompressionSpec

FAKE_QUANT_NOTE = ("fake quantization: weights are quantized then dequantized, so evaluation "
                   "runs in {dtype} on exactly the quantized values; size counts packed codes")


def needs_calibration(spec: CompressionSpec) -> bool:
    """The method, or its layer-wise allocation, reads calibration activations."""
    if spec.is_dense:
        return False
    return spec.entry.calibrated or bool(spec.layerwise
                                         and registry.allocator(spec.layerwise).calibrated)


def calibration_spec(spec: CompressionSpec) -> calib.CalibrationSpec | None:
    """The calibration a spec runs with (None for methods that need none)."""
    return (spec.calibration or calib.CalibrationSpec()) if needs_calibration(spec) else None


def check(spec: CompressionSpec, model=None) -> None:
    """Raise a clear error for a spec that cannot run (before any work is done)."""
    if not spec.is_dense:
        registry.method(spec.method)
    if spec.calibration is not None and not needs_calibration(spec):
        raise ValueError(f"method {spec.method!r} takes no calibration data")
    if not spec.is_dense and spec.entry.available:
        ok, why = spec.entry.available()
        if not ok:
            raise ValueError(f"{spec.method}: {why}")
    if model is None:
        return
    for name, module in target_linears(model):
        width = weight_matrix(module).shape[1]
        if spec.nm and width % spec.nm[1]:
            raise ValueError(f"pattern {spec.pattern}: layer {name} has input width {width}, "
                             f"not a multiple of {spec.nm[1]}")
        if spec.group_size and width % spec.group_size and not spec.partial_groups:
            raise ValueError(f"group_size {spec.group_size}: layer {name} has input width "
                             f"{width}, not a multiple of {spec.group_size}; choose a divisor "
                             f"or allow a shorter last group (partial_groups / --partial-groups)")


def apply(model, spec: CompressionSpec, calibration: calib.Calibration | None = None) -> dict:
    """Compress the model in place and return a report: size, achieved sparsity overall and
    per layer (plus reconstruction error for calibrated methods, per-layer targets for a
    layer-wise allocation)."""
    check(spec, model)
    dtype = next(model.parameters()).dtype
    if spec.is_dense:
        return {"spec": spec.label, "sparsity": 0.0, "layers": {}, "seconds": 0.0,
                "size": model_size(model, spec)}
    if spec.entry.loaded:
        raise ValueError(f"{spec.method} quantizes while loading: use compress.compressed(lm, spec)")
    if needs_calibration(spec) and calibration is None:
        raise ValueError(f"{spec.method} needs calibration data: pass "
                         "calibration=compress.calibration.prepare(tokenizer, calibration_spec(spec))")
    t0 = time.perf_counter()
    targets = None
    if spec.layerwise:
        targets = registry.allocator(spec.layerwise).allocate(model, spec, calibration)
    layer_spec = (lambda name: replace(spec, sparsity=targets[name])) if targets else None
    layers = spec.entry.apply(model, spec, calibration, layer_spec=layer_spec)
    seconds = time.perf_counter() - t0
    weights = {n: weight_matrix(m) for n, m in target_linears(model)}
    zeros = sum(int((weights[n] == 0).sum()) for n in layers)
    report = {"spec": spec.label, "sparsity": zeros / sum(weights[n].numel() for n in layers),
              "layers": layers, "seconds": seconds, "size": model_size(model, spec)}
    if targets:
        for name, target in targets.items():
            layers[name]["target_sparsity"] = target
    if spec.family == "quantization":
        report["arithmetic"] = FAKE_QUANT_NOTE.format(dtype=str(dtype).replace("torch.", ""))
        report["groups"] = _partial_groups(weights, spec)
    if calibration is not None:
        report["calibration"] = {"hash": calibration.hash, **calibration.spec.__dict__}
        report["calibration"]["source"] = str(calibration.spec.source or calib.DEFAULT_SOURCE.name)
    return report


def _partial_groups(weights: dict, spec: CompressionSpec) -> dict:
    """Layers whose last group is shorter than group_size (only with partial_groups)."""
    out = {}
    for name, w in weights.items():
        bounds = group_bounds(w.shape[1], spec.group_size)
        if bounds[-1][1] - bounds[-1][0] != (spec.group_size or w.shape[1]):
            out[name] = f"last group of {bounds[-1][1] - bounds[-1][0]} inputs"
    return out


@contextlib.contextmanager
def applied(model, spec: CompressionSpec, calibration: calib.Calibration | None = None):
    """Compress in place for the duration of the block, then restore the dense weights. The
    dense copy lives in host memory: on an accelerator a second copy of every linear weight
    would double the model's footprint there."""
    check(spec, model)
    saved = [] if spec.is_dense else [(m, m.weight.data.to("cpu", copy=True))
                                      for _, m in target_linears(model)]
    try:
        yield apply(model, spec, calibration)
    finally:
        for module, w in saved:
            module.weight.data.copy_(w)


@contextlib.contextmanager
def compressed(lm, spec: CompressionSpec, calibration: calib.Calibration | None = None):
    """(model, report) for any method: in place on lm for pruning and weight quantization
    (restored afterwards); a second, quantized-while-loading copy for loaded kernels."""
    if spec.is_dense or not spec.entry.loaded:
        with applied(lm.model, spec, calibration) as report:
            yield lm, report
        return
    check(spec, lm.model)
    t0 = time.perf_counter()
    qlm = models.load(lm.name, lm.device, lm.dtype,
                      quantization_config=spec.entry.load_config(spec, lm.dtype))
    report = {"spec": spec.label, "sparsity": 0.0, "layers": {},
              "seconds": time.perf_counter() - t0, "size": model_size(lm.model, spec),
              "loaded_bytes": bnb.footprint(qlm.model),
              "arithmetic": spec.entry.note(spec, lm)}
    yield qlm, report


__all__ = ["ALLOCATORS", "METHODS", "CompressionSpec", "apply", "applied", "calibration_spec",
           "check", "compressed", "needs_calibration", "registry"]

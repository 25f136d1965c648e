"""Compression methods: one registry, one signature: fn(model, spec, calibration) -> layer stats.

Pruning and weight quantization (rtn, gptq) edit the loaded model in place and are undone by
`applied`; bitsandbytes quantizes while loading, so `compressed` loads a second model for it.
"""

from __future__ import annotations

import contextlib
import time

from .. import models
from . import bnb, gptq, magnitude, rtn, sparsegpt, wanda
from . import calibration as calib
from .hessian import Hessian
from .layers import target_linears, weight_matrix
from .quant import group_bounds
from .size import model_size
from .spec import BNB, WEIGHT_QUANT, CompressionSpec

# methods that need activations: (collector class taking the input width, per-layer function)
CALIBRATED = {
    "wanda": (wanda.InputNorms, wanda.prune_layer),
    "sparsegpt": (Hessian, sparsegpt.prune_layer),
    "gptq": (Hessian, gptq.quantize_layers),
}
# whose function takes all the layers fed one input at once (a list of weights -> list of stats)
STACKED = {"gptq"}
FAKE_QUANT_NOTE = ("fake quantization: weights are quantized then dequantized, so evaluation "
                   "runs in {dtype} on exactly the quantized values; size counts packed codes")


def _calibrated(model, spec: CompressionSpec, calibration: calib.Calibration) -> dict:
    collector, fn = CALIBRATED[spec.method]
    calibration.captured(model)

    def compress_layers(modules, stats):
        ws = [weight_matrix(m) for m in modules]
        return fn(ws, stats, spec) if spec.method in STACKED else [fn(w, stats, spec) for w in ws]

    return calib.walk_layers(model, calibration.inputs, calibration.kwargs,
                             collect=lambda m: collector(weight_matrix(m).shape[1]),
                             compress_layers=compress_layers)


# name -> fn(model, spec, calibration) -> {layer name: {"sparsity": ..., ...}}
METHODS = {
    "magnitude": magnitude.prune,
    "wanda": _calibrated,
    "sparsegpt": _calibrated,
    "rtn": rtn.quantize,
    "gptq": _calibrated,
}


def needs_calibration(spec: CompressionSpec) -> bool:
    return spec.method in CALIBRATED


def calibration_spec(spec: CompressionSpec) -> calib.CalibrationSpec | None:
    """The calibration a spec runs with (None for methods that need none)."""
    return (spec.calibration or calib.CalibrationSpec()) if needs_calibration(spec) else None


def check(spec: CompressionSpec, model=None) -> None:
    """Raise a clear error for a spec that cannot run (before any work is done)."""
    if not spec.is_dense and spec.method not in METHODS and spec.method not in BNB:
        raise ValueError(f"unknown compression method {spec.method!r}; "
                         f"available: dense, {', '.join([*METHODS, *BNB])}")
    if spec.calibration is not None and not needs_calibration(spec):
        raise ValueError(f"method {spec.method!r} takes no calibration data")
    if spec.method in BNB:
        ok, why = bnb.available()
        if not ok:
            raise RuntimeError(f"{spec.method}: {why} (pip install bitsandbytes)")
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
    per layer (plus reconstruction error for calibrated methods)."""
    check(spec, model)
    if spec.method in BNB:
        raise ValueError(f"{spec.method} quantizes while loading: use compress.compressed(lm, spec)")
    dtype = next(model.parameters()).dtype
    if spec.is_dense:
        return {"spec": spec.label, "sparsity": 0.0, "layers": {}, "seconds": 0.0,
                "size": model_size(model, spec)}
    if needs_calibration(spec) and calibration is None:
        raise ValueError(f"{spec.method} needs calibration data: pass "
                         "calibration=compress.calibration.prepare(tokenizer, calibration_spec(spec))")
    t0 = time.perf_counter()
    layers = METHODS[spec.method](model, spec, calibration=calibration)
    seconds = time.perf_counter() - t0
    weights = {n: weight_matrix(m) for n, m in target_linears(model)}
    zeros = sum(int((weights[n] == 0).sum()) for n in layers)
    report = {"spec": spec.label, "sparsity": zeros / sum(weights[n].numel() for n in layers),
              "layers": layers, "seconds": seconds, "size": model_size(model, spec)}
    if spec.method in WEIGHT_QUANT:
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
    """Compress in place for the duration of the block, then restore the dense weights."""
    check(spec, model)
    saved = [] if spec.is_dense else [(m, m.weight.data.clone()) for _, m in target_linears(model)]
    try:
        yield apply(model, spec, calibration)
    finally:
        for module, w in saved:
            module.weight.data.copy_(w)


@contextlib.contextmanager
def compressed(lm, spec: CompressionSpec, calibration: calib.Calibration | None = None):
    """(model, report) for any method: in place on lm for pruning and rtn/gptq (restored
    afterwards); a second, bitsandbytes-quantized copy for bnb-* methods."""
    if spec.method not in BNB:
        with applied(lm.model, spec, calibration) as report:
            yield lm, report
        return
    check(spec, lm.model)
    t0 = time.perf_counter()
    qlm = models.load(lm.name, lm.device, lm.dtype, quantization_config=bnb.config(spec, lm.dtype))
    report = {"spec": spec.label, "sparsity": 0.0, "layers": {},
              "seconds": time.perf_counter() - t0, "size": model_size(lm.model, spec),
              "loaded_bytes": bnb.footprint(qlm.model),
              "arithmetic": bnb.arithmetic(spec, lm)}
    yield qlm, report

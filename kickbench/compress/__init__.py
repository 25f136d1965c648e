"""Compression methods: one registry, one signature: fn(model, spec, calibration) -> layer stats."""

from __future__ import annotations

import contextlib
import time

from . import calibration as calib
from . import magnitude, sparsegpt, wanda
from .layers import target_linears, weight_matrix
from .spec import CompressionSpec

# methods that need activations: (collector class taking the input width, per-layer pruner)
CALIBRATED = {
    "wanda": (wanda.InputNorms, wanda.prune_layer),
    "sparsegpt": (sparsegpt.Hessian, sparsegpt.prune_layer),
}


def _calibrated(model, spec: CompressionSpec, calibration: calib.Calibration) -> dict:
    collector, prune_layer = CALIBRATED[spec.method]
    calibration.captured(model)
    return calib.walk_layers(model, calibration.inputs, calibration.kwargs,
                             collect=lambda m: collector(weight_matrix(m).shape[1]),
                             compress_layer=lambda m, c: prune_layer(weight_matrix(m), c, spec))


# name -> fn(model, spec, calibration) -> {layer name: {"sparsity": ..., ...}}
METHODS = {
    "magnitude": magnitude.prune,
    "wanda": _calibrated,
    "sparsegpt": _calibrated,
}


def needs_calibration(spec: CompressionSpec) -> bool:
    return spec.method in CALIBRATED


def calibration_spec(spec: CompressionSpec) -> calib.CalibrationSpec | None:
    """The calibration a spec runs with (None for methods that need none)."""
    return (spec.calibration or calib.CalibrationSpec()) if needs_calibration(spec) else None


def check(spec: CompressionSpec, model=None) -> None:
    """Raise a clear error for a spec that cannot run (before any work is done)."""
    if not spec.is_dense and spec.method not in METHODS:
        raise ValueError(f"unknown compression method {spec.method!r}; "
                         f"available: dense, {', '.join(METHODS)}")
    if spec.calibration is not None and not needs_calibration(spec):
        raise ValueError(f"method {spec.method!r} takes no calibration data")
    if model is not None and spec.nm:
        m = spec.nm[1]
        for name, module in target_linears(model):
            width = weight_matrix(module).shape[1]
            if width % m:
                raise ValueError(f"pattern {spec.pattern}: layer {name} has input width {width}, "
                                 f"not a multiple of {m}")


def apply(model, spec: CompressionSpec, calibration: calib.Calibration | None = None) -> dict:
    """Compress the model in place and return a report: achieved sparsity overall and per
    layer (plus reconstruction error for calibrated methods)."""
    check(spec, model)
    if spec.is_dense:
        return {"spec": spec.label, "sparsity": 0.0, "layers": {}, "seconds": 0.0}
    if needs_calibration(spec) and calibration is None:
        raise ValueError(f"{spec.method} needs calibration data: pass "
                         "calibration=compress.calibration.prepare(tokenizer, calibration_spec(spec))")
    t0 = time.perf_counter()
    layers = METHODS[spec.method](model, spec, calibration=calibration)
    sizes = {n: weight_matrix(m).numel() for n, m in target_linears(model)}
    overall = sum(layers[n]["sparsity"] * sizes[n] for n in layers) / sum(sizes[n] for n in layers)
    report = {"spec": spec.label, "sparsity": overall, "layers": layers,
              "seconds": time.perf_counter() - t0}
    if calibration is not None:
        report["calibration"] = {"hash": calibration.hash, **calibration.spec.__dict__}
        report["calibration"]["source"] = str(calibration.spec.source or calib.DEFAULT_SOURCE.name)
    return report


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

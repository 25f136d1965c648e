"""Compression methods: a registry of functions with one signature, prune(model, spec) -> layers."""

from __future__ import annotations

import contextlib
import time

from . import magnitude
from .layers import target_linears, weight_matrix
from .spec import CompressionSpec

# name -> fn(model, spec, **context) -> {layer name: achieved sparsity}
METHODS = {
    "magnitude": magnitude.prune,
}
KINDS = {"magnitude": "pruning"}


def check(spec: CompressionSpec, model=None) -> None:
    """Raise a clear error for a spec that cannot run (before any work is done)."""
    if not spec.is_dense and spec.method not in METHODS:
        raise ValueError(f"unknown compression method {spec.method!r}; "
                         f"available: dense, {', '.join(METHODS)}")
    if model is not None and spec.nm:
        m = spec.nm[1]
        for name, module in target_linears(model):
            width = weight_matrix(module).shape[1]
            if width % m:
                raise ValueError(f"pattern {spec.pattern}: layer {name} has input width {width}, "
                                 f"not a multiple of {m}")


def apply(model, spec: CompressionSpec, **context) -> dict:
    """Compress the model in place and return a report (achieved sparsity overall and per layer)."""
    check(spec, model)
    if spec.is_dense:
        return {"spec": spec.label, "sparsity": 0.0, "layers": {}, "seconds": 0.0}
    t0 = time.perf_counter()
    layers = METHODS[spec.method](model, spec, **context)
    sizes = {n: weight_matrix(m).numel() for n, m in target_linears(model)}
    overall = sum(layers[n] * sizes[n] for n in layers) / sum(sizes[n] for n in layers)
    return {"spec": spec.label, "sparsity": overall, "layers": layers,
            "seconds": time.perf_counter() - t0}


@contextlib.contextmanager
def applied(model, spec: CompressionSpec, **context):
    """Compress in place for the duration of the block, then restore the dense weights."""
    check(spec, model)
    saved = [] if spec.is_dense else [(m, m.weight.data.clone()) for _, m in target_linears(model)]
    try:
        yield apply(model, spec, **context)
    finally:
        for module, w in saved:
            module.weight.data.copy_(w)

"""The one place where choices become runs: values from the CLI, the widgets, papermill
parameters or Python calls -> validated CompressionSpecs, TaskSpecs and a plan.

Everything here is cheap (no model loads), so a bad value fails before any slow work.
"""

from __future__ import annotations

from typing import Any

from .compress import calibration as calib
from .compress import needs_calibration, registry
from .compress.spec import CompressionSpec


def options_for(method: str, layerwise: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The options among `options` that a method (with its allocation) declares."""
    declared = {o.name for o in registry.method(method).options}
    if layerwise:
        declared |= {o.name for o in registry.allocator(layerwise).options}
    return {k: v for k, v in options.items() if k in declared}


def spec(method: str, *, calibration: calib.CalibrationSpec | None = None,
         options: dict[str, Any] | None = None, **fields) -> CompressionSpec:
    """One spec; calibration is attached only where the method (or allocation) reads it, and
    of `options` only those the method declares (a report passes one set to every method)."""
    if method == "dense":
        if options:
            raise ValueError(f"method 'dense' takes no options, got {', '.join(options)}")
        return CompressionSpec("dense", **fields)
    options = options_for(method, fields.get("layerwise"), options or {})
    s = CompressionSpec(method, options=options, **fields)
    return CompressionSpec(method, options=options, calibration=calibration, **fields) \
        if needs_calibration(s) else s


def grid(methods, sparsities=(), patterns=(), bits=(), group_size: int | None = None,
         symmetric: bool = False, partial_groups: bool = False,
         calibration_spec: calib.CalibrationSpec | None = None, layerwise: str | None = None,
         options: dict[str, Any] | None = None) -> list[CompressionSpec]:
    """The specs of a sweep: dense, each pruning method at every sparsity and pattern, each
    weight quantizer at every bit width (one grid setting), each fixed-level method once.
    layerwise applies to the unstructured pruning levels; options go to the methods that
    declare them (an option no chosen method declares is refused)."""
    options = dict(options or {})
    _check_options_used(methods, layerwise, options)
    specs = [CompressionSpec("dense")]
    for m in methods:
        entry = registry.method(m)
        common = dict(calibration=calibration_spec, options=options)
        if entry.level == "bits":
            specs += [spec(m, bits=b, group_size=group_size, symmetric=symmetric,
                           partial_groups=partial_groups, **common) for b in bits]
        elif entry.level == "fixed":
            specs.append(spec(m, **common))
        else:
            specs += [spec(m, sparsity=x, layerwise=layerwise, **common) for x in sparsities]
            specs += [spec(m, pattern=x, **common) for x in patterns]
    return specs


def _check_options_used(methods, layerwise, options) -> None:
    if layerwise is not None:
        registry.allocator(layerwise)
        if not any(registry.method(m).family == "pruning" for m in methods):
            raise ValueError(f"layerwise {layerwise!r} applies to pruning methods; "
                             f"none among {', '.join(methods) or 'no methods'}")
    used = set()
    for m in methods:
        used |= set(options_for(m, layerwise, options))
    unused = sorted(set(options) - used)
    if unused:
        raise ValueError(f"option {unused[0]!r} applies to no chosen method "
                         f"({', '.join(methods)}{' with layerwise ' + layerwise if layerwise else ''})")

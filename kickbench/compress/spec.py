"""The frozen description of one compression setting.

The spec holds the fields every family shares (the level of pruning, the grid of a quantizer)
plus `options`, a method's own fields. Which fields a method takes, and their checks, belong to
the method (compress/registry.py, filled from each method's file): a spec refuses a field its
method does not take, so no table here lists methods.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from . import registry
from .calibration import CalibrationSpec

PATTERN_RE = re.compile(r"^(\d+):(\d+)$")
QUANT_BITS = range(2, 9)
# fields added after results were first stored: left out of the key while at their default,
# so adding them did not orphan earlier results
LATER_FIELDS = {"symmetric": False, "act_order": False, "partial_groups": False,
                "double_quant": False, "layerwise": None, "options": ()}
ALWAYS = ("method", "calibration", "options")  # taken by every method (calibration if it needs it)


@dataclass(frozen=True)
class CompressionSpec:
    """method + level.

    Pruning: sparsity, and pattern 'unstructured' or 'N:M' (N kept in every M along the input);
    layerwise names a per-layer sparsity allocation (None: uniform; e.g. 'owl').
    Weight quantization (rtn, gptq, ...): bits 2-8, group_size (None = per output channel),
    symmetric, act_order (gptq); partial_groups allows a shorter last group where group_size
    does not divide a layer's input width. bitsandbytes (bnb-int8, bnb-nf4, bnb-fp4): bits are
    implied, double_quant for the 4-bit kinds. calibration (methods that need activations:
    None means CalibrationSpec()) and damping (relative Hessian damping of SparseGPT and GPTQ)
    are part of the spec because they change the weights. options: {name: value} of the
    method's (or allocator's) own fields, stored with every declared default filled in.
    """

    method: str = "dense"
    sparsity: float = 0.0
    pattern: str = "unstructured"
    bits: int | None = None
    group_size: int | None = None
    calibration: CalibrationSpec | None = None
    damping: float = 0.01
    symmetric: bool = False
    act_order: bool = False
    partial_groups: bool = False
    double_quant: bool = False
    layerwise: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if isinstance(self.options, dict):
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))
        if not isinstance(self.sparsity, (int, float)) or not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity!r}")
        if not isinstance(self.damping, (int, float)) or not 0 < self.damping < 1:
            raise ValueError(f"damping must be in (0, 1), got {self.damping!r}")
        if self.method == "dense":
            if self.sparsity or self.pattern != "unstructured":
                raise ValueError("method 'dense' takes no sparsity or pattern")
            self._refuse(set(), "dense")
            return
        m = registry.method(self.method)
        self._refuse(set(m.fields), m.name)
        self._check_options(m)
        for name, value in (m.check(self) or {}).items():  # e.g. bits implied by the method
            object.__setattr__(self, name, value)

    def _refuse(self, taken: set[str], name: str) -> None:
        """A field the method does not take must stay at its default."""
        for f in fields(self):
            if f.name in taken or f.name in ALWAYS:
                continue
            if getattr(self, f.name) != f.default:
                users = [m for m in registry.METHODS.values() if f.name in m.fields]
                where = f"{f.name} applies to {', '.join(m.name for m in users)}; " if users else ""
                raise ValueError(f"method {name!r} takes no {f.name} "
                                 f"({where}got {f.name}={getattr(self, f.name)!r})")

    def _check_options(self, m: registry.Method) -> None:
        declared = {o.name: o for o in m.options}
        if self.layerwise is not None:
            declared.update({o.name: o for o in registry.allocator(self.layerwise).options})
        given = dict(self.options)
        unknown = sorted(set(given) - set(declared))
        if unknown:
            allowed = ", ".join(declared) or "none"
            raise ValueError(f"{self.label_method} takes no option {unknown[0]!r} "
                             f"(its options: {allowed})")
        full = {name: given.get(name, opt.default) for name, opt in declared.items()}
        for name, value in full.items():
            declared[name].validate(value)
        object.__setattr__(self, "options", tuple(sorted(full.items())))

    @property
    def label_method(self) -> str:
        return f"method {self.method!r}" + (f" with layerwise {self.layerwise!r}"
                                            if self.layerwise else "")

    @property
    def entry(self) -> registry.Method | None:
        """The registered method (None for dense)."""
        return None if self.is_dense else registry.method(self.method)

    def option(self, name: str) -> Any:
        return dict(self.options)[name]

    @property
    def nm(self) -> tuple[int, int] | None:
        """(N, M) for an N:M pattern, None when unstructured."""
        m = PATTERN_RE.match(self.pattern)
        return (int(m[1]), int(m[2])) if m else None

    @property
    def is_dense(self) -> bool:
        return self.method == "dense"

    @property
    def family(self) -> str:
        """'dense', 'pruning' or 'quantization'."""
        return "dense" if self.is_dense else self.entry.family

    def canonical(self) -> "CompressionSpec":
        """A pruning spec that prunes nothing is the dense model: computed once, stored once."""
        if self.family == "pruning" and self.sparsity == 0.0 and self.pattern == "unstructured":
            return CompressionSpec("dense")
        return self

    @property
    def setting(self) -> str:
        """What stays fixed along one curve: the pattern kind, or the grid of a quantizer."""
        if self.is_dense:
            return ""
        if self.entry.setting:
            return self.entry.setting(self)
        if self.family == "pruning":
            return " ".join(filter(None, [self.pattern if self.nm else "unstructured",
                                          self.layerwise]))
        return " ".join(filter(None, [f"g{self.group_size}" if self.group_size else "per-channel",
                                      "sym" if self.symmetric else "",
                                      "act-order" if self.act_order else ""]))

    @property
    def label(self) -> str:
        if self.is_dense:
            return "dense"
        if self.entry.label:
            return self.entry.label(self)
        if self.family == "pruning":
            level = self.pattern if self.nm else f"{self.sparsity:.0%}"
            return " ".join(filter(None, [self.method, level, self.layerwise]))
        return f"{self.method} w{self.bits} {self.setting}"

    @classmethod
    def from_key(cls, d: dict) -> "CompressionSpec":
        """The spec back from key() (as stored)."""
        d = dict(d)
        if d.get("calibration") is not None:
            d["calibration"] = CalibrationSpec(**d["calibration"])
        if "options" in d:
            d["options"] = tuple(sorted(d["options"].items()))
        return cls(**d)

    def key(self) -> dict:
        d = asdict(self)
        d["options"] = dict(self.options)
        for f, default in LATER_FIELDS.items():
            if d[f] == (dict(default) if f == "options" else default):
                del d[f]
        return d


def check_pruning(spec: CompressionSpec) -> dict:
    """The pruning family's level: an N:M pattern implies its sparsity; OWL-style allocations
    apply to unstructured sparsity."""
    out = {}
    if spec.pattern != "unstructured":
        m = PATTERN_RE.match(str(spec.pattern))
        if not m:
            raise ValueError(f"pattern must be 'unstructured' or 'N:M' like '2:4', "
                             f"got {spec.pattern!r}")
        n, mm = int(m[1]), int(m[2])
        if not 0 < n < mm:
            raise ValueError(f"N:M pattern needs 0 < N < M, got {spec.pattern!r}")
        implied = 1 - n / mm
        if spec.sparsity not in (0.0, implied):
            raise ValueError(f"pattern {spec.pattern} implies sparsity {implied:g}, "
                             f"got sparsity={spec.sparsity!r}")
        out["sparsity"] = implied
        if spec.layerwise is not None:
            raise ValueError(f"layerwise {spec.layerwise!r} allocates unstructured sparsity; "
                             f"pattern {spec.pattern} fixes every layer's sparsity")
    return out


def check_grid(spec: CompressionSpec) -> dict:
    """The weight quantizers' grid: bits 2..8, group size >= 2 or per channel."""
    if spec.bits not in QUANT_BITS or isinstance(spec.bits, bool):
        raise ValueError(f"{spec.method} needs bits in 2..8, got bits={spec.bits!r}")
    if spec.group_size is not None and (not isinstance(spec.group_size, int)
                                        or isinstance(spec.group_size, bool)
                                        or spec.group_size < 2):
        raise ValueError(f"group_size must be an integer >= 2 or None (per channel), "
                         f"got {spec.group_size!r}")
    return {}


# shared fields by family, for methods to declare (a method may take fewer or more)
PRUNING_FIELDS = ("sparsity", "pattern", "layerwise")
GRID_FIELDS = ("bits", "group_size", "symmetric", "partial_groups")

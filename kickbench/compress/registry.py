"""The compressor contract: every method joins METHODS from its own file with `register`.

A method says its family, the shared spec fields it takes (a spec refuses the others), its own
options (carried by `CompressionSpec.options`), whether it needs calibration activations, and
one function `apply(model, spec, calibration, layer_sparsity) -> {layer name: stats}` that
compresses in place. A loaded kernel (bitsandbytes) gives `load_config` instead of `apply`: it
quantizes while the model loads. Layer-wise sparsity allocators (OWL) join ALLOCATORS the same
way and work under any pruning method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FAMILIES = ("pruning", "quantization")
LEVELS = ("sparsity", "bits", "fixed")  # what a sweep varies: sparsity/pattern, bit width, nothing


@dataclass(frozen=True)
class Option:
    """A method's own config field: name (also the CLI flag, `--name-with-dashes`), default,
    help text, and check(value) -> an error text or None."""

    name: str
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None

    def validate(self, value: Any) -> None:
        kind = type(self.default)
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ValueError(f"option {self.name} must be a {kind.__name__}, got {value!r}")
        if self.check and (why := self.check(value)):
            raise ValueError(f"option {self.name}={value!r}: {why}")


@dataclass(frozen=True)
class Method:
    """One compressor. fields: the shared CompressionSpec fields it takes besides method,
    calibration and options; check(spec) raises on a bad combination and may return
    normalised field values (e.g. bits implied by the method); level: what a sweep varies."""

    name: str
    family: str
    level: str
    description: str
    apply: Callable[..., dict] | None = None
    load_config: Callable[..., Any] | None = None
    fields: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    calibrated: bool = False
    check: Callable[[Any], dict | None] | None = None
    size_bits: Callable[[Any, Any], int] | None = None   # (spec, compressed [out, in] w) -> bits
    label: Callable[[Any], str] | None = None            # overrides the family's label
    setting: Callable[[Any], str] | None = None          # overrides the family's setting
    note: Callable[[Any, Any], str] | None = None        # (spec, lm) -> what evaluation computes with
    available: Callable[[], tuple[bool, str]] | None = None  # (usable here, why not)

    def __post_init__(self):
        if self.family not in FAMILIES or self.level not in LEVELS:
            raise ValueError(f"method {self.name}: family must be one of {FAMILIES} and level "
                             f"one of {LEVELS}, got {self.family!r}, {self.level!r}")
        if (self.apply is None) == (self.load_config is None):
            raise ValueError(f"method {self.name}: give exactly one of apply and load_config")

    @property
    def loaded(self) -> bool:
        """Quantizes at load time (a second model) instead of editing weights in place."""
        return self.load_config is not None


@dataclass(frozen=True)
class Allocator:
    """Per-layer sparsity for the pruning methods: allocate(model, spec, calibration) ->
    {layer name: sparsity}, averaging spec.sparsity over the pruned weights."""

    name: str
    description: str
    allocate: Callable[..., dict[str, float]]
    options: tuple[Option, ...] = ()
    calibrated: bool = False


METHODS: dict[str, Method] = {}
ALLOCATORS: dict[str, Allocator] = {}


def register(entry: Method | Allocator) -> Method | Allocator:
    """Add a method or an allocator (called once, from the file that owns it)."""
    table = METHODS if isinstance(entry, Method) else ALLOCATORS
    if entry.name in table or entry.name in ("dense", "uniform"):
        raise ValueError(f"compressor {entry.name!r} is registered already")
    table[entry.name] = entry
    return entry


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown compression method {name!r}; available: dense, "
                         f"{', '.join(METHODS)}")
    return METHODS[name]


def allocator(name: str) -> Allocator:
    if name not in ALLOCATORS:
        raise ValueError(f"unknown layer-wise allocation {name!r}; available: uniform, "
                         f"{', '.join(ALLOCATORS)}")
    return ALLOCATORS[name]


def names(family: str | None = None, level: str | None = None) -> list[str]:
    """Registered method names, optionally of one family or level, in registration order."""
    return [m.name for m in METHODS.values()
            if family in (None, m.family) and level in (None, m.level)]


def all_options() -> dict[str, Option]:
    """Every option of every method and allocator, by name (the CLI adds a flag for each)."""
    out: dict[str, Option] = {}
    for entry in [*METHODS.values(), *ALLOCATORS.values()]:
        for opt in entry.options:
            out.setdefault(opt.name, opt)
    return out

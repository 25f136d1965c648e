"""The frozen description of one compression setting."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .calibration import CalibrationSpec

PATTERN_RE = re.compile(r"^(\d+):(\d+)$")

# method families; the registry of functions lives in compress/__init__.py
PRUNING = ("magnitude", "wanda", "sparsegpt")
WEIGHT_QUANT = ("rtn", "gptq")                           # fake quantization, in place
BNB = {"bnb-int8": 8, "bnb-nf4": 4, "bnb-fp4": 4}       # bitsandbytes, applied at load time
QUANTIZATION = (*WEIGHT_QUANT, *BNB)
QUANT_BITS = range(2, 9)
# fields added after results were first stored: left out of the key while at their default,
# so adding them did not orphan earlier results
LATER_FIELDS = {"symmetric": False, "act_order": False, "partial_groups": False,
                "double_quant": False}


@dataclass(frozen=True)
class CompressionSpec:
    """method + level.

    Pruning: sparsity, and pattern 'unstructured' or 'N:M' (N kept in every M along the input).
    Weight quantization (rtn, gptq): bits 2-8, group_size (None = per output channel),
    symmetric, act_order (gptq); partial_groups allows a shorter last group where group_size
    does not divide a layer's input width. bitsandbytes (bnb-int8, bnb-nf4, bnb-fp4): bits are
    implied, double_quant for the 4-bit kinds. calibration (methods that need activations:
    None means CalibrationSpec()) and damping (relative Hessian damping of SparseGPT and GPTQ)
    are part of the spec because they change the weights.
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

    def __post_init__(self):
        if not isinstance(self.sparsity, (int, float)) or not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity!r}")
        if self.pattern != "unstructured":
            m = PATTERN_RE.match(self.pattern)
            if not m:
                raise ValueError(f"pattern must be 'unstructured' or 'N:M' like '2:4', "
                                 f"got {self.pattern!r}")
            n, mm = int(m[1]), int(m[2])
            if not 0 < n < mm:
                raise ValueError(f"N:M pattern needs 0 < N < M, got {self.pattern!r}")
            implied = 1 - n / mm
            if self.sparsity not in (0.0, implied):
                raise ValueError(f"pattern {self.pattern} implies sparsity {implied:g}, "
                                 f"got sparsity={self.sparsity!r}")
            object.__setattr__(self, "sparsity", implied)
        if self.method == "dense" and (self.sparsity or self.pattern != "unstructured"):
            raise ValueError("method 'dense' takes no sparsity or pattern")
        if not 0 < self.damping < 1:
            raise ValueError(f"damping must be in (0, 1), got {self.damping!r}")
        if self.method in QUANTIZATION:
            self._check_quantization()
        else:
            self._refuse("bits", "group_size", "symmetric", "act_order", "partial_groups",
                         "double_quant")

    def _refuse(self, *fields: str) -> None:
        for f in fields:
            if getattr(self, f) not in (None, False):
                raise ValueError(f"method {self.method!r} takes no {f} "
                                 f"(got {f}={getattr(self, f)!r})")

    def _check_quantization(self) -> None:
        if self.sparsity or self.pattern != "unstructured":
            raise ValueError(f"quantization method {self.method!r} takes no sparsity or pattern")
        if self.method in BNB:
            implied = BNB[self.method]
            if self.bits not in (None, implied):
                raise ValueError(f"{self.method} is {implied}-bit, got bits={self.bits!r}")
            object.__setattr__(self, "bits", implied)
            self._refuse("group_size", "symmetric", "act_order", "partial_groups")
            if self.double_quant and implied == 8:
                raise ValueError("double_quant applies to bnb-nf4 and bnb-fp4 only")
            return
        if self.bits not in QUANT_BITS:
            raise ValueError(f"{self.method} needs bits in 2..8, got bits={self.bits!r}")
        if self.group_size is not None and (not isinstance(self.group_size, int)
                                            or self.group_size < 2):
            raise ValueError(f"group_size must be an integer >= 2 or None (per channel), "
                             f"got {self.group_size!r}")
        if self.act_order and self.method != "gptq":
            raise ValueError("act_order applies to gptq only")
        self._refuse("double_quant")

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
        if self.is_dense:
            return "dense"
        return "quantization" if self.method in QUANTIZATION else "pruning"

    def canonical(self) -> "CompressionSpec":
        """A pruning spec that prunes nothing is the dense model: computed once, stored once."""
        if self.sparsity == 0.0 and self.pattern == "unstructured" and self.bits is None:
            return CompressionSpec("dense")
        return self

    @property
    def setting(self) -> str:
        """What stays fixed along one curve: the pattern kind, or the grid of a quantizer."""
        if self.family == "pruning":
            return self.pattern if self.nm else "unstructured"
        if self.method in BNB:
            return "double quant" if self.double_quant else ""
        return " ".join(filter(None, [f"g{self.group_size}" if self.group_size else "per-channel",
                                      "sym" if self.symmetric else "",
                                      "act-order" if self.act_order else ""]))

    @property
    def label(self) -> str:
        if self.is_dense:
            return "dense"
        if self.family == "pruning":
            return f"{self.method} {self.pattern if self.nm else f'{self.sparsity:.0%}'}"
        if self.method in BNB:
            return " ".join(filter(None, [self.method, "dq" if self.double_quant else ""]))
        return f"{self.method} w{self.bits} {self.setting}"

    @classmethod
    def from_key(cls, d: dict) -> "CompressionSpec":
        """The spec back from key() (as stored)."""
        d = dict(d)
        if d.get("calibration") is not None:
            d["calibration"] = CalibrationSpec(**d["calibration"])
        return cls(**d)

    def key(self) -> dict:
        d = asdict(self)
        for f, default in LATER_FIELDS.items():
            if d[f] == default:
                del d[f]
        return d

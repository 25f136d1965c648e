"""The frozen description of one compression setting."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .calibration import CalibrationSpec

PATTERN_RE = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class CompressionSpec:
    """method + level. pattern is 'unstructured' or 'N:M' (N kept in every M along the input).

    bits/group_size are reserved for the quantizers; pruning leaves them None. calibration
    (methods that need activations: None means CalibrationSpec()) and damping (relative
    Hessian damping of SparseGPT) are part of the spec because they change the weights.
    """

    method: str = "dense"
    sparsity: float = 0.0
    pattern: str = "unstructured"
    bits: int | None = None
    group_size: int | None = None
    calibration: CalibrationSpec | None = None
    damping: float = 0.01

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

    @property
    def nm(self) -> tuple[int, int] | None:
        """(N, M) for an N:M pattern, None when unstructured."""
        m = PATTERN_RE.match(self.pattern)
        return (int(m[1]), int(m[2])) if m else None

    @property
    def is_dense(self) -> bool:
        return self.method == "dense"

    def canonical(self) -> "CompressionSpec":
        """A pruning spec that prunes nothing is the dense model: computed once, stored once."""
        if self.sparsity == 0.0 and self.pattern == "unstructured" and self.bits is None:
            return CompressionSpec("dense")
        return self

    @property
    def label(self) -> str:
        if self.is_dense:
            return "dense"
        level = self.pattern if self.nm else f"{self.sparsity:.0%}"
        return f"{self.method} {level}"

    def key(self) -> dict:
        return asdict(self)

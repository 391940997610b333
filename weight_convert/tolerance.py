"""Parity tolerances. Framework-free, so the CLI can quote them without importing a framework."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Tolerance", "BLOCK_TOLERANCE", "MODEL_TOLERANCE"]


@dataclass(frozen=True)
class Tolerance:
    """A tensor passes when max |port - reference| <= atol + rtol * std(reference)."""

    atol: float = 1e-5
    rtol: float = 0.0

    def bound(self, reference: np.ndarray) -> float:
        std = float(np.std(reference.astype(np.float64))) if self.rtol and reference.size else 0.0
        return self.atol + self.rtol * std

    def describe(self) -> str:
        parts = [f"{self.atol:g}"] if self.atol else []
        if self.rtol:
            parts.append(f"{self.rtol:g} x std")
        return " + ".join(parts) or "0"


#: fp32 building blocks: max abs error <= 1e-5.
BLOCK_TOLERANCE = Tolerance(atol=1e-5)
#: fp32 whole models: max abs error <= 1e-4 x std of the reference tensor (each compared tensor).
MODEL_TOLERANCE = Tolerance(atol=0.0, rtol=1e-4)

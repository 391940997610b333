"""What a parity run reports: ``LayerError`` (one compared tensor) and ``ParityReport`` (a run's
per-layer errors, outputs, unaligned records and numeric settings). Framework-free."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from weight_convert.tolerance import Tolerance

__all__ = ["OUTPUT", "LayerError", "ParityReport", "layer_error"]

#: label of the output of a module with one output (several: ``<output i>``)
OUTPUT = "<output>"


@dataclass(frozen=True)
class LayerError:
    """Error of one submodule call. ``max_rel`` is max_abs relative to max |reference|;
    ``bound`` is the largest max_abs the tolerance allowed this tensor."""

    path: str
    call: int
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    bound: float

    @property
    def exceeded(self) -> bool:
        return not self.max_abs <= self.bound  # NaN counts as exceeded

    @property
    def label(self) -> str:
        return self.path if self.call == 0 else f"{self.path} (call {self.call + 1})"


def layer_error(
    path: str, call: int, ref: np.ndarray, got: np.ndarray, tol: Tolerance, scale: float = 0.0
) -> LayerError:
    """The error of port tensor ``got`` against reference tensor ``ref`` (same shape, port
    format), in float64; ``scale``: the run's scale for ``tol.rscale``."""
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    max_abs = float(np.max(np.abs(ref64 - got64))) if ref.size else 0.0
    peak = float(np.max(np.abs(ref64))) if ref.size else 0.0
    return LayerError(
        path, call, tuple(ref.shape), max_abs, max_abs / max(peak, 1e-30), tol.bound(ref, scale)
    )


@dataclass
class ParityReport:
    """Per-layer errors in execution order, the output errors and the numeric settings used.

    ``outputs`` has one entry per output tensor (a model in features mode returns several).
    ``group`` names what the run belongs to (the block of a block case, the variant or family
    of a model) for tables that gather runs; ``unmatched`` lists the reference submodules whose
    output found no port output of the same path and shape.
    """

    name: str
    framework: str
    outputs: list[LayerError]
    layers: list[LayerError] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    group: str = ""

    @property
    def output(self) -> LayerError:
        """The output tensor closest to (or furthest over) its bound."""
        return max(self.outputs, key=lambda e: np.inf if e.exceeded else e.max_abs / e.bound)

    @property
    def first_failure(self) -> LayerError | None:
        for layer in [*self.layers, *self.outputs]:
            if layer.exceeded:
                return layer
        return None

    @property
    def passed(self) -> bool:
        return self.first_failure is None

    @property
    def max_abs(self) -> float:
        return max(e.max_abs for e in self.outputs)

    def table(self) -> str:
        """Readable per-layer table, execution order, the first failure marked."""
        first = self.first_failure
        rows = [f"{self.name} on {self.framework}: " + ("PASS" if self.passed else "FAIL")]
        rows.append(f"  {'layer':<44} {'shape':<22} {'max abs':>10} {'max rel':>10} {'bound':>9}")
        for e in [*self.layers, *self.outputs]:
            mark = "  <-- first above tolerance" if e is first else ""
            rows.append(
                f"  {e.label:<44} {str(e.shape):<22} {e.max_abs:10.3e} {e.max_rel:10.3e} "
                f"{e.bound:9.1e}{mark}"
            )
        if self.unmatched:
            rows.append("  not aligned with the port: " + ", ".join(self.unmatched))
        rows.append("  settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()))
        return "\n".join(rows)

    def to_json(self) -> dict[str, Any]:
        first = self.first_failure
        return {
            "name": self.name,
            "group": self.group,
            "framework": self.framework,
            "passed": self.passed,
            "max_abs": self.max_abs,
            "first_failure": None if first is None else first.label,
            "outputs": [asdict(e) for e in self.outputs],
            "layers": [asdict(e) for e in self.layers],
            "unmatched": self.unmatched,
            "settings": self.settings,
        }

    def __str__(self) -> str:
        return json.dumps(self.to_json())

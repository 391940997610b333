"""Parity harness: run a reference module and its port on the same inputs with the same weights,
compare the outputs and every aligned submodule's intermediate output, and name the first
submodule above tolerance.

Used by the tests, by ``weight-convert parity`` and by ``--verify``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from weight_convert import transfer
from weight_convert.frameworks import reference as ref_fw
from zoo.layout import Layout, to_port
from zoo.registry import BlockCase

__all__ = ["Tolerance", "LayerError", "ParityReport", "compare", "run_case", "BLOCK_TOLERANCE"]

OUTPUT = "<output>"


@dataclass(frozen=True)
class Tolerance:
    """A tensor passes when max |port - reference| <= atol + rtol * std(reference)."""

    atol: float = 1e-5
    rtol: float = 0.0

    def bound(self, reference: np.ndarray) -> float:
        std = float(np.std(reference)) if self.rtol else 0.0
        return self.atol + self.rtol * std


#: fp32 building blocks: max abs error <= 1e-5. Whole models use Tolerance(0, 1e-4).
BLOCK_TOLERANCE = Tolerance(atol=1e-5)


@dataclass(frozen=True)
class LayerError:
    """Error of one submodule call. ``max_rel`` is max_abs relative to max |reference|."""

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


@dataclass
class ParityReport:
    """Per-layer errors in execution order, the output error and the numeric settings used."""

    name: str
    framework: str
    output: LayerError
    layers: list[LayerError] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def first_failure(self) -> LayerError | None:
        for layer in self.layers:
            if layer.exceeded:
                return layer
        return self.output if self.output.exceeded else None

    @property
    def passed(self) -> bool:
        return self.first_failure is None

    @property
    def max_abs(self) -> float:
        return self.output.max_abs

    def table(self) -> str:
        """Readable per-layer table, execution order, the first failure marked."""
        first = self.first_failure
        rows = [f"{self.name} on {self.framework}: " + ("PASS" if self.passed else "FAIL")]
        rows.append(f"  {'layer':<44} {'shape':<22} {'max abs':>10} {'max rel':>10} {'bound':>9}")
        for e in [*self.layers, self.output]:
            mark = "  <-- first above tolerance" if e is first else ""
            rows.append(
                f"  {e.label:<44} {str(e.shape):<22} {e.max_abs:10.3e} {e.max_rel:10.3e} "
                f"{e.bound:9.1e}{mark}"
            )
        rows.append("  settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()))
        return "\n".join(rows)

    def to_json(self) -> dict[str, Any]:
        first = self.first_failure
        return {
            "name": self.name,
            "framework": self.framework,
            "passed": self.passed,
            "max_abs": self.max_abs,
            "first_failure": None if first is None else first.label,
            "output": asdict(self.output),
            "layers": [asdict(e) for e in self.layers],
            "unmatched": self.unmatched,
            "settings": self.settings,
        }

    def __str__(self) -> str:
        return json.dumps(self.to_json())


def _error(path, call, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> LayerError:
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    max_abs = float(np.max(np.abs(ref64 - got64))) if ref.size else 0.0
    peak = float(np.max(np.abs(ref64))) if ref.size else 0.0
    return LayerError(
        path, call, tuple(ref.shape), max_abs, max_abs / max(peak, 1e-30), tol.bound(ref)
    )


def compare(
    reference,
    port,
    adapter,
    inputs: Sequence[np.ndarray],
    layouts: Sequence[Layout],
    *,
    tolerance: Tolerance = BLOCK_TOLERANCE,
    name: str = "",
    after_transfer: Callable[[Any], None] | None = None,
) -> ParityReport:
    """Transfer the reference's weights into ``port``, run both on ``inputs`` (reference layouts;
    the port gets ``zoo.layout.to_port`` of each) and compare outputs layer by layer.

    ``after_transfer(port)`` may alter the port before it runs (used to plant bugs in tests).
    """
    port_inputs = [to_port(x, lay) for x, lay in zip(inputs, layouts, strict=False)]
    adapter.materialize(port, port_inputs)
    adapter.assign(port, transfer.to_port(ref_fw.state_dict(reference), adapter.shapes(port)))
    if after_transfer is not None:
        after_transfer(port)

    with ref_fw.numerics(), ref_fw.capture(reference) as ref_records:
        ref_out = ref_fw.call(reference, list(inputs))
        settings = {"dtype": str(ref_out.dtype), **ref_fw.settings()}
    with adapter.numerics(), adapter.capture(port) as port_records:
        port_out = adapter.call(port, port_inputs)
        settings.update(adapter.settings())

    port_calls: dict[str, list[np.ndarray]] = defaultdict(list)
    for path, out in port_records:
        port_calls[path].append(out)
    seen: dict[str, int] = defaultdict(int)
    layers, unmatched = [], []
    for path, lay, out in ref_records:
        k = seen[path]
        seen[path] += 1
        candidates = port_calls.get(path, [])
        expected = to_port(out, lay)
        if k >= len(candidates) or candidates[k].shape != expected.shape:
            unmatched.append(path)
            continue
        layers.append(_error(path, k, expected, candidates[k], tolerance))

    out_layout = ref_fw.layout(reference)
    expected = to_port(ref_out, out_layout)
    if expected.shape != port_out.shape:
        raise ValueError(f"{name}: port output {port_out.shape} != reference {expected.shape}")
    return ParityReport(
        name=name,
        framework=adapter.NAME,
        output=_error(OUTPUT, 0, expected, port_out, tolerance),
        layers=layers,
        unmatched=sorted(set(unmatched)),
        settings=settings,
    )


def run_case(
    case: BlockCase,
    adapter,
    *,
    seed: int = 0,
    tolerance: Tolerance = BLOCK_TOLERANCE,
    after_transfer: Callable[[Any], None] | None = None,
    port_kwargs: dict[str, Any] | None = None,
) -> ParityReport:
    """Build ``case``'s reference with random weights and its port, and ``compare`` them."""
    reference = ref_fw.randomize_(ref_fw.build(case.block, case.kwargs), seed)
    port = adapter.build(case.block, {**case.kwargs, **(port_kwargs or {})})
    rng = np.random.default_rng(seed)
    inputs = [inp.make(rng) for inp in case.inputs]
    return compare(
        reference,
        port,
        adapter,
        inputs,
        [inp.layout for inp in case.inputs],
        tolerance=tolerance,
        name=case.name,
        after_transfer=after_transfer,
    )

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
from weight_convert.tolerance import BLOCK_TOLERANCE, MODEL_TOLERANCE, Tolerance
from zoo.blocks import BlockCase
from zoo.tensor_format import Format, to_port_format

__all__ = [
    "BLOCK_TOLERANCE",
    "MODEL_TOLERANCE",
    "LayerError",
    "ParityReport",
    "ReferenceRun",
    "Tolerance",
    "compare",
    "load_reference_weights",
    "run_case",
    "run_model",
    "run_reference",
]

OUTPUT = "<output>"


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
    """Per-layer errors in execution order, the output errors and the numeric settings used.

    ``outputs`` has one entry per output tensor (a model in features mode returns several).
    """

    name: str
    framework: str
    outputs: list[LayerError]
    layers: list[LayerError] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)

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
            "outputs": [asdict(e) for e in self.outputs],
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


@dataclass(frozen=True)
class ReferenceRun:
    """The reference's outputs and every submodule's output (path, layout, array) on some
    inputs, with the numeric settings: what ``compare`` holds a port against."""

    outputs: list[np.ndarray]
    records: list[tuple[str, Format, np.ndarray]]
    layout: Format
    settings: dict[str, str]


def run_reference(reference, inputs: Sequence[np.ndarray]) -> ReferenceRun:
    """Run the reference on ``inputs`` (its layouts) with full fp32 matmuls, recording every
    submodule's output."""
    formats = {path: ref_fw.output_format(sub) for path, sub in reference.named_modules()}
    with ref_fw.numerics(), ref_fw.capture(reference) as recorder:
        out = ref_fw.call(reference, list(inputs), recorder=recorder)
        outs = out if isinstance(out, list) else [out]
        settings = {"dtype": str(outs[0].dtype), **ref_fw.settings()}
    records = [(path, formats[path], value) for path, value in recorder]
    return ReferenceRun(outs, records, formats[""], settings)


def load_reference_weights(adapter, port, reference, port_inputs: Sequence[np.ndarray]) -> None:
    """Create the port's variables (Keras builds on first call) and give them the reference's
    weights through the structural transfer (strict coverage both ways)."""
    adapter.materialize(port, list(port_inputs))
    adapter.assign(port, transfer.to_port(ref_fw.state_dict(reference), adapter.shapes(port)))


def compare(
    reference,
    port,
    adapter,
    inputs: Sequence[np.ndarray],
    layouts: Sequence[Format],
    *,
    tolerance: Tolerance = BLOCK_TOLERANCE,
    name: str = "",
    after_transfer: Callable[[Any], None] | None = None,
    transfer_weights: bool = True,
    reference_run: ReferenceRun | None = None,
) -> ParityReport:
    """Transfer the reference's weights into ``port`` (unless ``transfer_weights`` is False: the
    port already holds them, e.g. loaded from a converted file), run both on ``inputs``
    (reference formats; the port gets ``zoo.tensor_format.to_port_format`` of each) and compare
    outputs layer by layer.

    ``after_transfer(port)`` may alter the port before it runs (used to plant bugs in tests).
    ``reference_run`` (from ``run_reference`` on the same inputs) saves running a large
    reference again when several ports are compared with it.
    """
    port_inputs = [to_port_format(x, lay) for x, lay in zip(inputs, layouts, strict=False)]
    if transfer_weights:
        load_reference_weights(adapter, port, reference, port_inputs)
    if after_transfer is not None:
        after_transfer(port)

    if reference_run is None:
        reference_run = run_reference(reference, inputs)
    ref_out, ref_records = reference_run.outputs, reference_run.records
    settings = dict(reference_run.settings)
    with adapter.numerics(), adapter.capture(port) as recorder:
        port_out = adapter.call(port, port_inputs, recorder=recorder)
        settings.update(adapter.settings())
    port_records = recorder.records

    port_calls: dict[str, list[np.ndarray]] = defaultdict(list)
    for path, out in port_records:
        port_calls[path].append(out)
    seen: dict[str, int] = defaultdict(int)
    layers, unmatched = [], []
    for path, lay, out in ref_records:
        k = seen[path]
        seen[path] += 1
        candidates = port_calls.get(path, [])
        expected = to_port_format(out, lay)
        if k >= len(candidates) or candidates[k].shape != expected.shape:
            unmatched.append(path)
            continue
        layers.append(_error(path, k, expected, candidates[k], tolerance))

    out_layout = reference_run.layout
    ref_outs = ref_out
    port_outs = port_out if isinstance(port_out, list) else [port_out]
    if len(ref_outs) != len(port_outs):
        raise ValueError(f"{name}: port gives {len(port_outs)} outputs, reference {len(ref_outs)}")
    outputs = []
    for i, (r, p) in enumerate(zip(ref_outs, port_outs, strict=True)):
        expected = to_port_format(r, out_layout)
        if expected.shape != p.shape:
            raise ValueError(f"{name}: port output {p.shape} != reference {expected.shape}")
        label = OUTPUT if len(ref_outs) == 1 else f"<output {i}>"
        outputs.append(_error(label, 0, expected, p, tolerance))
    return ParityReport(
        name=name,
        framework=adapter.NAME,
        outputs=outputs,
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
        [inp.format for inp in case.inputs],
        tolerance=tolerance,
        name=case.name,
        after_transfer=after_transfer,
    )


def run_model(
    name: str,
    adapter,
    input_shape: Sequence[int],
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    tolerance: Tolerance = MODEL_TOLERANCE,
    after_transfer: Callable[[Any], None] | None = None,
) -> ParityReport:
    """Variant ``name`` (``zoo.configs.VARIANTS``, fields replaced by ``overrides``) with random
    weights in the reference and the port, on N(0, 1) input of the reference ``input_shape``
    (channels-first image or clip); whole-model tolerance by default."""
    from zoo.models import create_model

    overrides = dict(overrides or {})
    reference = ref_fw.randomize_(create_model(name, **overrides), seed)
    port = adapter.create(name, **overrides)
    x = np.random.default_rng(seed).standard_normal(tuple(input_shape), dtype=np.float32)
    return compare(
        reference,
        port,
        adapter,
        [x],
        [Format.CHANNELS_FIRST],
        tolerance=tolerance,
        name=f"{name}{list(input_shape)}",
        after_transfer=after_transfer,
    )

"""The comparison: run a reference module and its port on the same inputs with the same weights,
compare the outputs and every aligned submodule's output, and name the first submodule above
tolerance.

Used by the runners (``run_case``, ``run_model``, ``run_config``), by ``--verify`` and by the
notebooks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from weight_convert import transfer
from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity.formats import fitting_format
from weight_convert.parity.report import OUTPUT, LayerError, ParityReport, layer_error
from weight_convert.tolerance import BLOCK_TOLERANCE, Tolerance
from zoo.tensor_format import Format, to_port_format

__all__ = ["ReferenceRun", "compare", "load_reference_weights", "port_inputs", "run_reference"]


@dataclass(frozen=True)
class ReferenceRun:
    """The reference's outputs and every submodule's output (path, declared format or None,
    array) on some inputs, with the numeric settings: what ``compare`` holds a port against.
    ``output_formats``: each output's declared format (None: undeclared; see
    ``reference.output_formats``)."""

    outputs: list[np.ndarray]
    records: list[tuple[str, Format | None, np.ndarray]]
    output_formats: list[Format | None]
    settings: dict[str, str]


def run_reference(
    reference, inputs: Sequence[np.ndarray], *, training: bool = False
) -> ReferenceRun:
    """Run the reference on ``inputs`` (its formats) with full fp32 matmuls, recording every
    submodule's output; in inference mode unless ``training``."""
    formats = ref_fw.declared_formats(reference)
    with ref_fw.numerics(), ref_fw.capture(reference) as recorder:
        out = ref_fw.call(reference, list(inputs), training=training, recorder=recorder)
        outs = out if isinstance(out, list) else [out]
        settings = {"dtype": str(outs[0].dtype), **ref_fw.settings()}
    if training:
        settings["mode"] = "training"
    records = [(path, formats[path], value) for path, value in recorder]
    return ReferenceRun(outs, records, ref_fw.output_formats(reference, len(outs)), settings)


def port_inputs(
    inputs: Sequence[np.ndarray], formats: Sequence[Format], name: str = ""
) -> list[np.ndarray]:
    """The reference ``inputs`` in the ports' format, one format per input (ValueError when the
    counts differ: an input without a format would otherwise be dropped)."""
    if len(inputs) != len(formats):
        where = f"{name}: " if name else ""
        raise ValueError(f"{where}{len(inputs)} inputs but {len(formats)} formats: one per input")
    return [to_port_format(x, fmt) for x, fmt in zip(inputs, formats, strict=True)]


def load_reference_weights(adapter, port, reference, port_inputs: Sequence[np.ndarray]) -> None:
    """Create the port's variables for ``port_inputs`` (Keras builds on the first call) and give
    them the reference's weights through the structural transfer (strict coverage both ways).
    The variables are not initialized first where the adapter can avoid it (their values are
    replaced anyway)."""
    adapter.materialize(port, list(port_inputs), initialize=False)
    adapter.assign(port, transfer.to_port(ref_fw.state_dict(reference), adapter.shapes(port)))


def _run_port(
    adapter, port, inputs: list[np.ndarray], training: bool = False
) -> tuple[list, list, dict[str, str]]:
    """The port's outputs, its (path, output) records and its numeric settings (which say when
    the layers' outputs could not be captured: ``zoo.compat`` fallback, outputs only)."""
    with adapter.numerics(), adapter.capture(port) as recorder:
        out = adapter.call(port, inputs, training=training, recorder=recorder)
        settings = adapter.settings()
    first = out[0] if isinstance(out, list) else out
    settings["port output dtype"] = str(first.dtype)  # mixed precision: bfloat16
    if not recorder.intercepting:
        settings["layer capture"] = "off (zoo.compat fallback: outputs compared only)"
    return (out if isinstance(out, list) else [out]), recorder.records, settings


def _align(
    reference_records: Sequence[tuple[str, Format | None, np.ndarray]],
    port_records: Sequence[tuple[str, np.ndarray]],
    tolerance: Tolerance,
) -> tuple[list[LayerError], list[str]]:
    """Pair the k-th call of a reference submodule with the k-th call of the port submodule of
    the same path; compare where the shapes agree in the record's format
    (``formats.fitting_format``). Returns the errors and the unaligned paths."""
    port_calls: dict[str, list[np.ndarray]] = defaultdict(list)
    for path, out in port_records:
        port_calls[path].append(out)
    seen: dict[str, int] = defaultdict(int)
    layers, unmatched = [], []
    for path, declared, out in reference_records:
        k = seen[path]
        seen[path] += 1
        candidates = port_calls.get(path, [])
        got = candidates[k] if k < len(candidates) else None
        fmt = fitting_format(out.shape, None if got is None else got.shape, declared)
        expected = to_port_format(out, fmt)
        if got is None or got.shape != expected.shape:
            unmatched.append(path)
            continue
        layers.append(layer_error(path, k, expected, got, tolerance))
    return layers, sorted(set(unmatched))


def _output_errors(
    reference_run: ReferenceRun, port_outs: list, tolerance: Tolerance, name: str
) -> list[LayerError]:
    ref_outs = reference_run.outputs
    if len(ref_outs) != len(port_outs):
        raise ValueError(f"{name}: port gives {len(port_outs)} outputs, reference {len(ref_outs)}")
    errors = []
    declared = reference_run.output_formats
    for i, (r, p) in enumerate(zip(ref_outs, port_outs, strict=True)):
        expected = to_port_format(r, fitting_format(r.shape, p.shape, declared[i]))
        if expected.shape != p.shape:
            raise ValueError(f"{name}: port output {p.shape} != reference {expected.shape}")
        label = OUTPUT if len(ref_outs) == 1 else f"<output {i}>"
        errors.append(layer_error(label, 0, expected, p, tolerance))
    return errors


def compare(
    reference,
    port,
    adapter,
    inputs: Sequence[np.ndarray],
    formats: Sequence[Format],
    *,
    tolerance: Tolerance = BLOCK_TOLERANCE,
    name: str = "",
    group: str = "",
    after_transfer: Callable[[Any], None] | None = None,
    transfer_weights: bool = True,
    reference_run: ReferenceRun | None = None,
    training: bool = False,
) -> ParityReport:
    """Transfer the reference's weights into ``port`` (unless ``transfer_weights`` is False: the
    port already holds them, e.g. loaded from a converted file), run both on ``inputs``
    (reference formats, one of ``formats`` each; the port gets
    ``zoo.tensor_format.to_port_format`` of each) and compare outputs layer by layer.

    ``after_transfer(port)`` may alter the port before it runs (used to plant bugs in tests).
    ``reference_run`` (from ``run_reference`` on the same inputs) saves running a large
    reference again when several ports are compared with it. ``name`` and ``group`` label the
    report. ``training``: both run in training mode (meaningful with every stochastic rate at 0:
    the train-mode graph, deterministic).
    """
    ported = port_inputs(inputs, formats, name)
    if transfer_weights:
        load_reference_weights(adapter, port, reference, ported)
    if after_transfer is not None:
        after_transfer(port)
    if reference_run is None:
        reference_run = run_reference(reference, inputs, training=training)
    port_outs, port_records, port_settings = _run_port(adapter, port, ported, training)
    layers, unmatched = _align(reference_run.records, port_records, tolerance)
    return ParityReport(
        name=name,
        framework=adapter.NAME,
        outputs=_output_errors(reference_run, port_outs, tolerance, name),
        layers=layers,
        unmatched=unmatched,
        settings={**reference_run.settings, **port_settings},
        group=group,
    )

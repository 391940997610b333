"""The baseline of mixed precision: the PyTorch reference under ``torch.autocast`` (bfloat16)
against itself in float32, forward (every submodule's output) and backward (every parameter's
and floating input's gradient), in the report the ports' comparisons give. What bfloat16
costs in PyTorch itself is what a port computing in bfloat16 can be expected to cost too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity.comparison import run_reference
from weight_convert.parity.gradients import Cotangents
from weight_convert.parity.report import OUTPUT, ParityReport, layer_error
from weight_convert.tolerance import MIXED_BFLOAT16, Tolerance
from zoo.tensor_format import Format

__all__ = ["NAME", "compare_autocast", "compare_autocast_gradients"]

#: the report's ``framework``
NAME = "torch-autocast"


def compare_autocast(
    reference,
    inputs: Sequence[np.ndarray],
    formats: Sequence[Format],
    *,
    tolerance: Tolerance,
    name: str = "",
    group: str = "",
) -> ParityReport:
    """Every submodule's output and the outputs of ``reference`` under ``torch.autocast``
    against the same module in float32, on ``inputs`` (their formats: both runs are the
    reference, so ``formats`` only has to match the inputs' count)."""
    if len(inputs) != len(formats):
        raise ValueError(f"{name}: {len(inputs)} inputs but {len(formats)} formats")
    full = run_reference(reference, inputs)
    with ref_fw.autocast(MIXED_BFLOAT16):
        mixed = run_reference(reference, inputs)
    if [p for p, _, _ in full.records] != [p for p, _, _ in mixed.records]:
        raise ValueError(f"{name}: autocast changed which submodules ran")
    seen: dict[str, int] = {}
    layers = []
    for (path, _, want), (_, _, got) in zip(full.records, mixed.records, strict=True):
        seen[path] = seen.get(path, -1) + 1
        layers.append(layer_error(path, seen[path], want, got, tolerance))
    single = len(full.outputs) == 1
    outputs = [
        layer_error(OUTPUT if single else f"<output {i}>", 0, want, got, tolerance)
        for i, (want, got) in enumerate(zip(full.outputs, mixed.outputs, strict=True))
    ]
    settings = {"dtype": MIXED_BFLOAT16, "output dtype": str(mixed.outputs[0].dtype)}
    settings.update(ref_fw.settings())
    return ParityReport(name, NAME, outputs, layers, settings=settings, group=group)


def compare_autocast_gradients(
    reference,
    inputs: Sequence[np.ndarray],
    formats: Sequence[Format],
    *,
    tolerance: Tolerance,
    seed: int = 0,
    name: str = "",
    group: str = "",
) -> ParityReport:
    """The gradients of ``sum_i <output_i, c_i>`` (the ports' loss,
    ``weight_convert.parity.gradients``) with respect to every parameter and floating input,
    under ``torch.autocast`` against float32."""
    if len(inputs) != len(formats):
        raise ValueError(f"{name}: {len(inputs)} inputs but {len(formats)} formats")
    cots = Cotangents(seed, ref_fw.declared_formats(reference)[""])
    with ref_fw.numerics():
        want_inputs, want = ref_fw.gradients(reference, list(inputs), cots.reference)
        with ref_fw.autocast(MIXED_BFLOAT16):
            got_inputs, got = ref_fw.gradients(reference, list(inputs), cots.reference)
    scale = max((float(np.max(np.abs(g), initial=0.0)) for g in want.values()), default=0.0)
    layers = [layer_error(k, 0, g, got[k], tolerance, scale) for k, g in want.items()]
    outputs = [
        layer_error(f"<input {i} gradient>", 0, w, g, tolerance, scale)
        for i, (w, g) in enumerate(zip(want_inputs, got_inputs, strict=True))
        if w is not None
    ]
    settings = {"dtype": MIXED_BFLOAT16, **ref_fw.settings(), "loss": "sum <outputs, random c>"}
    name = f"{name} (gradients)" if name else "gradients"
    return ParityReport(name, NAME, outputs, layers, settings=settings, group=group)

"""Runners: build a reference with random weights and its port, make the inputs, ``compare``.

- ``run_case``: a building block's parity case (``zoo.blocks.BlockCase``);
- ``run_config``: any model config of any registered family, its inputs from the family spec
  (``Family.make_inputs``: however many, of whatever kind: SAM's image, point coordinates and
  labels);
- ``run_model``: a registered variant by name (``run_config`` of its config).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity.comparison import compare
from weight_convert.parity.gradients import compare_gradients
from weight_convert.parity.optimizer_steps import compare_optimizer_steps
from weight_convert.parity.report import ParityReport
from weight_convert.tolerance import (
    BLOCK_GRAD_TOLERANCE,
    BLOCK_TOLERANCE,
    FLOAT64_GRAD_TOLERANCE,
    FLOAT64_TOLERANCE,
    MIXED_BFLOAT16,
    MIXED_BFLOAT16_GRAD_TOLERANCE,
    MIXED_BFLOAT16_MODEL_GRAD_TOLERANCE,
    MIXED_BFLOAT16_TOLERANCE,
    MODEL_GRAD_TOLERANCE,
    MODEL_TOLERANCE,
    Tolerance,
    optimizer_step_tolerance,
)
from zoo.blocks import BlockCase

__all__ = ["run_case", "run_config", "run_model"]


def _comparison(
    gradients: bool,
    dtype: str | None,
    model: bool,
    seed: int,
    optimizer: Any = None,
    steps: int = 0,
):
    """The comparison to run (forward, gradients or optimizer steps), its default tolerance and
    its extra arguments."""
    if optimizer is not None:
        tolerance = optimizer_step_tolerance(optimizer, dtype)
        extra = {"seed": seed, "spec": optimizer, "steps": steps}
        return compare_optimizer_steps, tolerance, extra
    if dtype == "float64":
        tolerance = FLOAT64_GRAD_TOLERANCE if gradients else FLOAT64_TOLERANCE
    elif dtype == MIXED_BFLOAT16:
        grad = MIXED_BFLOAT16_MODEL_GRAD_TOLERANCE if model else MIXED_BFLOAT16_GRAD_TOLERANCE
        tolerance = grad if gradients else MIXED_BFLOAT16_TOLERANCE
    elif gradients:
        tolerance = MODEL_GRAD_TOLERANCE if model else BLOCK_GRAD_TOLERANCE
    else:
        tolerance = MODEL_TOLERANCE if model else BLOCK_TOLERANCE
    if gradients:
        return compare_gradients, tolerance, {"seed": seed}
    return compare, tolerance, {}


def _in_dtype(inputs: list[np.ndarray], dtype: str | None) -> list[np.ndarray]:
    if dtype is None or dtype == MIXED_BFLOAT16:  # mixed precision takes float32 inputs
        return inputs
    return [x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x for x in inputs]


def _run_autocast(reference, inputs, formats, gradients, tolerance, seed, name, group):
    """The reference under ``torch.autocast`` against itself in float32 (``parity.autocast``)."""
    from weight_convert.parity.autocast import compare_autocast, compare_autocast_gradients

    if gradients:
        run, extra = compare_autocast_gradients, {"seed": seed}
    else:
        run, extra = compare_autocast, {}
    return run(reference, inputs, formats, tolerance=tolerance, name=name, group=group, **extra)


def _check_adapter(adapter, dtype: str | None) -> None:
    if adapter is ref_fw and dtype != MIXED_BFLOAT16:
        raise ValueError(
            f"the reference is compared with itself only with dtype={MIXED_BFLOAT16!r}"
        )


def run_case(
    case: BlockCase,
    adapter,
    *,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    after_transfer: Callable[[Any], None] | None = None,
    port_kwargs: dict[str, Any] | None = None,
    gradients: bool = False,
    dtype: str | None = None,
    optimizer: Any = None,
    steps: int = 1,
    port_optimizer: Any = None,
    training: bool = False,
) -> ParityReport:
    """Build ``case``'s reference with random weights and its port, and ``compare`` them on the
    case's inputs drawn from ``seed`` (``gradients``: ``compare_gradients``, the backward pass;
    ``optimizer``, a ``zoo.training`` spec: ``compare_optimizer_steps``, ``steps`` steps of it,
    ``port_optimizer`` replacing the port's). ``dtype="float64"``: reference, port and inputs in
    float64, held to ``FLOAT64_TOLERANCE`` (the same weights and inputs, widened).
    ``dtype="mixed_bfloat16"``: the port computes in bfloat16 (float32 parameters and inputs)
    against the float32 reference, held to ``MIXED_BFLOAT16_TOLERANCE``; ``adapter`` may then be
    the reference's own (``weight_convert.frameworks.reference``): the reference under
    ``torch.autocast`` against itself in float32, the baseline. ``training``: reference and
    port in training mode (with every stochastic rate at 0). The report's ``group`` is the
    block's name."""
    _check_adapter(adapter, dtype)
    run, default, extra = _comparison(gradients, dtype, False, seed, optimizer, steps)
    if port_optimizer is not None:
        extra["port_optimizer"] = port_optimizer
    if training:
        extra["training"] = True
    with adapter.dtype_scope(dtype):
        reference = ref_fw.randomize_(ref_fw.build(case.block, case.kwargs), seed)
        reference = ref_fw.in_dtype(reference, dtype)
        rng = np.random.default_rng(seed)
        inputs = _in_dtype([inp.make(rng) for inp in case.inputs], dtype)
        formats = [inp.format for inp in case.inputs]
        if adapter is ref_fw:
            args = (tolerance or default, seed, case.name, case.block)
            return _run_autocast(reference, inputs, formats, gradients, *args)
        kwargs = {**case.kwargs, **(port_kwargs or {})}
        port = adapter.build(case.block, kwargs, initialize=False, dtype=dtype)
        return run(
            reference,
            port,
            adapter,
            inputs,
            formats,
            tolerance=tolerance or default,
            name=case.name,
            group=case.block,
            after_transfer=after_transfer,
            **extra,
        )


def run_config(
    config,
    adapter,
    shape: Sequence[int] | None = None,
    *,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    after_transfer: Callable[[Any], None] | None = None,
    name: str | None = None,
    group: str | None = None,
    gradients: bool = False,
    dtype: str | None = None,
    training: bool = False,
) -> ParityReport:
    """The model ``config`` describes (any registered family), with random weights in the
    reference (``zoo.models.build_model``) and the port (``adapter.build_model``), on the
    family's inputs (``zoo.configs.family_of(config).make_inputs(config, shape, seed)``:
    ``shape`` sets the first input's reference shape, None the variant's resolution); whole-model
    tolerance by default. ``name`` defaults to the config class and the first input's shape,
    ``group`` to the family's name. ``gradients``: ``compare_gradients`` (the backward pass);
    ``dtype="float64"``: everything in float64, ``dtype="mixed_bfloat16"``: bfloat16 compute
    (or, with the reference's adapter, ``torch.autocast``), as ``run_case``; ``training``:
    reference and port in training mode (with every stochastic rate at 0)."""
    from zoo.configs import family_of

    _check_adapter(adapter, dtype)
    family = family_of(config)
    run, default, extra = _comparison(gradients, dtype, True, seed)
    if training:
        extra["training"] = True
    with adapter.dtype_scope(dtype):
        inputs, formats = family.make_inputs(config, shape, seed)
        inputs = _in_dtype(list(inputs), dtype)
        reference = ref_fw.in_dtype(ref_fw.randomize_(ref_fw.build_model(config), seed), dtype)
        name = name or f"{type(config).__name__}{list(inputs[0].shape)}"
        group = family.name if group is None else group
        if adapter is ref_fw:
            args = (tolerance or default, seed, name, group)
            return _run_autocast(reference, inputs, formats, gradients, *args)
        port = adapter.build_model(config, initialize=False, dtype=dtype)
        return run(
            reference,
            port,
            adapter,
            inputs,
            formats,
            tolerance=tolerance or default,
            name=name,
            group=group,
            after_transfer=after_transfer,
            **extra,
        )


def run_model(
    name: str,
    adapter,
    input_shape: Sequence[int] | None = None,
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    tolerance: Tolerance | None = None,
    after_transfer: Callable[[Any], None] | None = None,
) -> ParityReport:
    """Variant ``name`` (``zoo.configs.VARIANTS``, fields replaced by ``overrides``):
    ``run_config`` of its config, the first input of reference shape ``input_shape`` (None: the
    variant's resolution). The report is named ``name[shape]`` and grouped under ``name``."""
    from zoo.configs import family_of, resolve

    config = resolve(name, **(overrides or {}))
    shape = tuple(input_shape) if input_shape is not None else None
    if shape is None:
        shape = family_of(config).default_shape(config)
    return run_config(
        config,
        adapter,
        shape,
        seed=seed,
        tolerance=tolerance,
        after_transfer=after_transfer,
        name=f"{name}{list(shape)}",
        group=name,
    )

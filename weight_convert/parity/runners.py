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
from weight_convert.parity.report import ParityReport
from weight_convert.tolerance import (
    BLOCK_GRAD_TOLERANCE,
    BLOCK_TOLERANCE,
    MODEL_GRAD_TOLERANCE,
    MODEL_TOLERANCE,
    Tolerance,
)
from zoo.blocks import BlockCase

__all__ = ["run_case", "run_config", "run_model"]


def run_case(
    case: BlockCase,
    adapter,
    *,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    after_transfer: Callable[[Any], None] | None = None,
    port_kwargs: dict[str, Any] | None = None,
    gradients: bool = False,
) -> ParityReport:
    """Build ``case``'s reference with random weights and its port, and ``compare`` them on the
    case's inputs drawn from ``seed`` (``gradients``: ``compare_gradients``, the backward pass).
    The report's ``group`` is the block's name."""
    reference = ref_fw.randomize_(ref_fw.build(case.block, case.kwargs), seed)
    port = adapter.build(case.block, {**case.kwargs, **(port_kwargs or {})}, initialize=False)
    rng = np.random.default_rng(seed)
    inputs = [inp.make(rng) for inp in case.inputs]
    if gradients:
        tolerance = tolerance or BLOCK_GRAD_TOLERANCE
        run, extra = compare_gradients, {"seed": seed}
    else:
        tolerance = tolerance or BLOCK_TOLERANCE
        run, extra = compare, {}
    return run(
        reference,
        port,
        adapter,
        inputs,
        [inp.format for inp in case.inputs],
        tolerance=tolerance,
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
) -> ParityReport:
    """The model ``config`` describes (any registered family), with random weights in the
    reference (``zoo.models.build_model``) and the port (``adapter.build_model``), on the
    family's inputs (``zoo.configs.family_of(config).make_inputs(config, shape, seed)``:
    ``shape`` sets the first input's reference shape, None the variant's resolution); whole-model
    tolerance by default. ``name`` defaults to the config class and the first input's shape,
    ``group`` to the family's name. ``gradients``: ``compare_gradients`` (the backward pass,
    whole-model gradient tolerance by default)."""
    from zoo.configs import family_of

    family = family_of(config)
    inputs, formats = family.make_inputs(config, shape, seed)
    reference = ref_fw.randomize_(ref_fw.build_model(config), seed)
    port = adapter.build_model(config, initialize=False)
    if gradients:
        tolerance = tolerance or MODEL_GRAD_TOLERANCE
        run, extra = compare_gradients, {"seed": seed}
    else:
        tolerance = tolerance or MODEL_TOLERANCE
        run, extra = compare, {}
    return run(
        reference,
        port,
        adapter,
        inputs,
        formats,
        **extra,
        tolerance=tolerance,
        name=name or f"{type(config).__name__}{list(inputs[0].shape)}",
        group=family.name if group is None else group,
        after_transfer=after_transfer,
    )


def run_model(
    name: str,
    adapter,
    input_shape: Sequence[int] | None = None,
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    tolerance: Tolerance = MODEL_TOLERANCE,
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

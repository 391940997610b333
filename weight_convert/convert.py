"""Conversion in every direction between PyTorch checkpoints (any registered layout), Keras 3
``.keras`` / ``.weights.h5`` files and Flax NNX ``.safetensors`` / ``.msgpack`` files: read the
source (``weight_convert.sources``), map it to the reference's state dict, then write the target
(``weight_convert.writers``: a port model's files or a checkpoint in a chosen PyTorch layout)
one tensor at a time, atomically, and optionally verify the written file layer by layer
(``weight_convert.verification``).

Every path goes through the reference's state dict (``{reference key: array or LazyTensor}``),
so weights arrive unchanged: the layout rules only transpose and rename, and a round trip
through Keras and Flax back to the source layout is bit-identical (tensors outside the model,
which some layouts' checkpoints hold, are dropped).

Only the frameworks a conversion needs are imported: reading a Flax file and writing a PyTorch
``.safetensors`` import none (NumPy only); reading or writing Keras imports Keras on the backend
``KERAS_BACKEND`` selects; ``.pth`` files need torch; ``--verify`` needs torch (the reference)
and the port being compared.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weight_convert import layouts, signals
from weight_convert.errors import UsageError
from weight_convert.outputs import (
    HUGGINGFACE,
    OUTPUT_SUFFIXES,
    check_not_source,
    check_outputs,
    check_writable,
    huggingface_paths,
    output_paths,
)
from weight_convert.progress import Progress
from weight_convert.sources import Source, check_variant, read_source
from weight_convert.writers import (
    Tensors,
    write_flax,
    write_huggingface,
    write_keras,
    write_torch,
)
from zoo.configs import Config, config_to_dict, family_of

__all__ = ["Conversion", "asdict", "convert"]


@dataclass
class Conversion:
    """What ``convert`` did: the source and what was detected in it, the files written, the
    PyTorch layout written (``--to torch``) and the verification report."""

    source: str
    target: str
    detected: dict[str, Any]
    outputs: list[str]
    layout: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    verify: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.verify is None or bool(self.verify["passed"])


def _outputs(source, target: str, output, layout: str | None, force: bool) -> list[Path]:
    """The output files, once the request is known to be sound, none of them the source, their
    names free (or, with ``force``, taken by files that may be replaced) and their folder
    writable: checked before anything is read, and the names again when the files are published
    (``outputs.atomic``)."""
    if target not in OUTPUT_SUFFIXES:
        raise UsageError(f"unknown target {target!r}; known: {', '.join(OUTPUT_SUFFIXES)}")
    if layout is not None and target != "torch":
        raise UsageError(
            f"--layout chooses the PyTorch layout written: use it with --to torch (not {target})"
        )
    if target == "torch" and layout == HUGGINGFACE:
        paths = huggingface_paths(source, output)
    else:
        paths = output_paths(source, target, output)
    check_not_source(paths, source)
    check_outputs(paths, replace=force)
    check_writable(paths)
    return paths


def _choose_layout(family: str, layout: str | None) -> str:
    known = layouts.family_layouts(family)
    if not known:
        raise UsageError(f"{family} has no PyTorch checkpoint layout: write --to keras or flax")
    if layout is None:
        return known[0]
    if layout not in known:
        raise UsageError(
            f"no layout {layout!r} for {family} checkpoints; {family} has: {', '.join(known)}"
        )
    return layout


#: the most values ``--verify``'s first input may hold (a 3 x 4096 x 4096 image is 5e7): the
#: models' activations are many times that, and the input is made before anything is checked
MAX_VERIFY_VALUES = 1 << 26


def _verify_shape(config: Config, shape: Sequence[int] | None) -> tuple[int, ...]:
    """``--verify``'s first input shape (None: the family's default), checked before anything
    is made or written: at most ``MAX_VERIFY_VALUES`` values, then the family's own input
    checks, as the reference would run them (``UsageError``: too large, a wrong rank, channel
    count or size)."""
    family = family_of(config)
    given = shape is not None
    shape = tuple(shape) if given else family.default_shape(config)
    flag = f"--verify-shape {'x'.join(map(str, shape))}" if given else "--verify"
    if math.prod(shape) > MAX_VERIFY_VALUES:
        raise UsageError(
            f"{flag}: an input of {math.prod(shape):,} values (at most {MAX_VERIFY_VALUES:,})"
            + ("" if given else ": give a smaller --verify-shape")
        )
    if not given:
        return shape
    stand_in = type(family.model, (), {"config": config})()  # named as the model, for messages
    try:
        inputs, _ = family.make_inputs(config, shape)
        family.check(stand_in, "torch", *inputs)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None
    return shape


def _write(
    loaded: Source, target: str, paths: list[Path], layout, tensors, progress, replace: bool
) -> None:
    name = loaded.variant or "custom config"
    if target == "torch":
        progress.step(f"writing {paths[0]} in the {layout} layout ({name})")
        state = layouts.from_reference(
            loaded.reference, layout, loaded.family, loaded.config, missing=loaded.missing
        )
        if layout == HUGGINGFACE:
            config = layouts.config_json(loaded.config, layout)
            write_huggingface(state, paths, config, tensors, progress, replace=replace)
        else:
            write_torch(state, paths[0], layout, loaded.family, tensors, progress, replace=replace)
    elif target == "flax":
        progress.step(f"writing {paths[0]} ({name})")
        write_flax(loaded, paths[0], tensors, progress, replace=replace)
    else:
        progress.step(f"building the keras model ({name}) and writing {paths[0]}")
        write_keras(loaded, paths, tensors, progress, replace=replace)


def _verify(loaded: Source, target: str, paths: list[Path], layout, shape, tensors, progress):
    from weight_convert import verification

    if target == "torch":
        against = "the source" if loaded.kind == "torch" else f"the {loaded.kind} source"
        progress.step(f"verifying the written checkpoint against {against}")
        written = paths[0].parent if layout == HUGGINGFACE else paths[0]
        return verification.verify_torch(written, layout, loaded, shape, tensors)
    progress.step(f"verifying against the PyTorch reference on input {list(shape)}")
    return verification.verify_files(target, paths, loaded.config, loaded.reference, shape)


def _layout_notes(loaded: Source, target: str, layout: str | None) -> list[str]:
    """What a PyTorch layout written cannot keep: config fields its checkpoints imply
    (``LayoutSpec.implies``: the input the weights expect) that the source's config differs
    in. A reader of the file will take the layout's value."""
    if target != "torch" or layout is None:
        return []
    spec = layouts.layout_spec(layout, loaded.family)
    return [
        f"the weights expect {field}={getattr(loaded.config, field)!r} but a {layout} "
        f"checkpoint holds no config and is read as {field}={value!r}: feed it "
        f"{getattr(loaded.config, field)!r} input yourself"
        for field, value in spec.implies
        if getattr(loaded.config, field) != value
    ]


def _summary(loaded: Source, source: str, target: str, paths, layout, times, report) -> Conversion:
    notes = list(loaded.detected.notes) if loaded.detected else []
    return Conversion(
        source=source,
        target=target if target != "keras" else f"keras-{_keras_backend()}",
        detected={
            "source": loaded.kind,
            "layout": loaded.layout,
            "family": loaded.family,
            "variant": loaded.variant,
            "container": loaded.info,
            "notes": notes + _layout_notes(loaded, target, layout),
            "config": config_to_dict(loaded.config),
            "missing": list(loaded.missing),
        },
        outputs=[str(p) for p in paths],
        layout=layout,
        seconds=times,
        verify=None if report is None else report.to_json(),
    )


def convert(
    source: str | Path,
    target: str,
    output: str | Path | None = None,
    *,
    layout: str | None = None,
    variant: str | None = None,
    verify: bool = False,
    verify_shape: Sequence[int] | None = None,
    force: bool = False,
    dtype: str | None = None,
    allow_missing: Sequence[str] = (),
    allow_unused: Sequence[str] = (),
    allow_nonfinite: bool = False,
    progress: Progress | None = None,
) -> tuple[Conversion, Any]:
    """Convert the file at ``source`` (PyTorch checkpoint, Keras ``.keras`` / ``.weights.h5``
    or Flax ``.safetensors`` / ``.msgpack``) to ``target``: "keras", "flax", or "torch" in
    ``layout`` (default ``layouts.default_layout(family)``).

    Each tensor keeps its dtype unless ``dtype`` ("float32", "float16", "bfloat16") casts the
    floating ones. Every output but a ``.pkl`` is streamed (one tensor in memory at a time;
    ``.pth`` inputs memory-mapped); NaN / Inf anywhere, or made by the cast, fails the
    conversion unless ``allow_nonfinite``; ``allow_missing`` / ``allow_unused`` are fnmatch
    patterns of tensors deliberately absent (left at initialization, or left out of a PyTorch
    output) or extra (dropped). Failures raise the ``weight_convert.errors`` kinds and leave no
    output behind. An output that exists, or appears while converting, is kept
    (``OutputExistsError``) unless ``force`` (``outputs.atomic``).

    Returns the ``Conversion`` summary and the verification ``ParityReport`` (or None).
    """
    paths = _outputs(source, target, output, layout, force)
    tensors = Tensors(dtype, allow_nonfinite)
    progress = progress or Progress(enabled=False)
    times: dict[str, float] = {}

    start = time.perf_counter()
    progress.step(f"reading {source}")
    loaded = read_source(source, layouts.Allow(tuple(allow_missing), tuple(allow_unused)), variant)
    check_variant(loaded, variant)
    if target == "torch":
        layout = _choose_layout(loaded.family, layout)
    shape = _verify_shape(loaded.config, verify_shape) if verify else None
    times["loaded"] = time.perf_counter() - start

    start = time.perf_counter()
    _write(loaded, target, paths, layout, tensors, progress, replace=force)
    times["write"] = time.perf_counter() - start

    report = None
    if verify:
        start = time.perf_counter()
        with signals.stage("--verify"):  # a signal now keeps the outputs, cuts this short
            report = _verify(loaded, target, paths, layout, shape, tensors, progress)
        times["verify"] = time.perf_counter() - start

    signals.check()  # a signal came since the outputs were published, its exception swallowed
    return _summary(loaded, str(source), target, paths, layout, times, report), report


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


def asdict(conversion: Conversion) -> dict[str, Any]:
    return {**dataclasses.asdict(conversion), "passed": conversion.passed}

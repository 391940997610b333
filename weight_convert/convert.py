"""Checkpoint -> Keras / Flax conversion: read, detect the layout and variant, map to the
reference keys, transfer structurally into the port, write atomically, and optionally verify the
written file against the PyTorch reference layer by layer.

Only the chosen target framework is imported (a Flax user never imports TensorFlow).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weight_convert import checkpoints, layouts, transfer
from weight_convert.progress import Progress
from zoo.configs import MODEL_CLASSES, VARIANTS, Config, config_to_dict
from zoo.layout import Layout

__all__ = ["TARGETS", "ConversionError", "OutputExistsError", "convert", "output_paths"]

#: target framework -> files written, by suffix
TARGETS = {"keras": (".keras", ".weights.h5"), "flax": (".safetensors",)}


class ConversionError(ValueError):
    """The checkpoint does not fit what was asked (another family or variant)."""


class OutputExistsError(FileExistsError):
    """An output file exists and ``force`` was not given."""


@dataclass
class Conversion:
    """What ``convert`` did: the detection, the files written and the verification report."""

    source: str
    target: str
    detected: dict[str, Any]
    outputs: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    verify: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.verify is None or bool(self.verify["passed"])


def output_paths(source: str | Path, target: str, output: str | Path | None) -> list[Path]:
    """Files for ``target``: ``output`` with its known suffix removed, or the checkpoint's stem
    in the current directory, plus each of the target's suffixes."""
    if output is None:
        stem = Path(Path(source).name)
        for suffix in (".pth", ".pt", ".bin", ".safetensors", ".pkl"):
            if stem.name.endswith(suffix):
                stem = Path(stem.name[: -len(suffix)])
        stem = Path.cwd() / f"{stem}_{target}"
    else:
        stem = Path(output)
        for suffix in TARGETS[target]:
            if stem.name.endswith(suffix):
                stem = stem.with_name(stem.name[: -len(suffix)])
    return [stem.with_name(stem.name + suffix) for suffix in TARGETS[target]]


def _check_variant(detected: layouts.Detected, variant: str | None) -> None:
    if variant is None:
        return
    expected = VARIANTS[variant].config
    got = detected.config
    if expected.family != got.family:
        raise ConversionError(
            f"asked for {variant} ({expected.family}) but the checkpoint is a {got.family} model"
            + (f" ({detected.variant})" if detected.variant else "")
        )
    diffs = [
        f"{f}={getattr(got, f)} (expected {getattr(expected, f)})"
        for f in layouts.arch_fields(expected)
        if getattr(got, f) != getattr(expected, f)
    ]
    if diffs:
        raise ConversionError(f"checkpoint is not {variant}: " + ", ".join(diffs))


def default_verify_shape(config: Config) -> tuple[int, ...]:
    """Reference (channels-first) image input used by ``--verify``: the variant's resolution
    (Video Swin: 16 frames)."""
    if config.family == "video_swin":
        return (1, config.in_chans, 16, config.img_size, config.img_size)
    return (1, config.in_chans, config.img_size, config.img_size)


def verify_inputs(
    config: Config, shape: Sequence[int], seed: int = 0
) -> tuple[list[np.ndarray], list[Layout]]:
    """The reference inputs ``--verify`` runs: N(0, 1) images of ``shape``; a full SAM model also
    gets two prompt points (one foreground, one background) inside the image."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(tuple(shape), dtype=np.float32)
    if config.family != "sam":
        return [image], [Layout.CHANNELS_FIRST]
    size = np.asarray(shape[-2:][::-1], np.float32)  # (W, H): points are (x, y)
    coords = (rng.uniform(0.05, 0.95, (shape[0], 2, 2)) * size).astype(np.float32)
    labels = np.tile(np.array([[1, 0]], np.int32), (shape[0], 1))
    return [image, coords, labels], [
        Layout.CHANNELS_FIRST,
        Layout.CHANNELS_LAST,
        Layout.CHANNELS_LAST,
    ]


def build_port(target: str, config: Config):
    """(adapter, model) for ``target`` built from ``config``, variables created."""
    from weight_convert.frameworks import port

    adapter = port(target)
    if target == "keras":
        from ports.keras.models import build_model

        model = build_model(config)
    else:
        from ports.flax.models import abstract_model

        # Abstract parameters: every one is set by the strict transfer before the model is
        # written (an unset one is a CoverageError).
        model = abstract_model(config)
        model.eval()
    return adapter, model


def _save(target: str, model, paths: list[Path]) -> None:
    """Write into a temporary directory beside the outputs, then rename: no half-written file."""
    directory = paths[0].parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".weight-convert-", dir=directory))
    try:
        staged = [tmp / p.name for p in paths]
        if target == "keras":
            model.save(str(staged[0]))
            model.save_weights(str(staged[1]))
        else:
            from ports.flax import serialization

            serialization.save(model, staged[0])
        for src, dst in zip(staged, paths, strict=True):
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_saved(target: str, paths: list[Path]):
    if target == "keras":
        import keras

        import ports.keras.models  # noqa: F401  (registers the serializable classes)

        return keras.saving.load_model(str(paths[0]))
    from ports.flax import serialization

    return serialization.load(paths[0])


def verify_files(
    target: str,
    paths: list[Path],
    config: Config,
    reference_state: dict[str, np.ndarray],
    shape: Sequence[int],
    seed: int = 0,
):
    """Load the written model back and compare it with the PyTorch reference holding the
    checkpoint's weights, layer by layer, on N(0, 1) input of ``shape``."""
    import zoo.models
    from weight_convert import parity
    from weight_convert.frameworks import port
    from weight_convert.frameworks import reference as ref_fw

    reference = getattr(zoo.models, MODEL_CLASSES[config.family])(config).eval()
    ref_fw.load_state_dict(reference, reference_state)
    model = _load_saved(target, paths)
    inputs, input_layouts = verify_inputs(config, shape, seed)
    return parity.compare(
        reference,
        model,
        port(target),
        inputs,
        input_layouts,
        tolerance=parity.MODEL_TOLERANCE,
        name=f"{Path(paths[0]).name}{list(shape)}",
        transfer_weights=False,
    )


def convert(
    source: str | Path,
    target: str,
    output: str | Path | None = None,
    *,
    variant: str | None = None,
    verify: bool = False,
    verify_shape: Sequence[int] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> tuple[Conversion, Any]:
    """Convert the checkpoint at ``source`` to ``target`` ("keras" or "flax").

    Returns the ``Conversion`` summary and the verification ``ParityReport`` (or None).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    progress = progress or Progress(enabled=False)
    paths = output_paths(source, target, output)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"output exists: {', '.join(existing)} (use --force to replace)")
    times: dict[str, float] = {}

    start = time.perf_counter()
    progress.step(f"reading {source}")
    state, info = checkpoints.load_state_dict(source)
    detected = layouts.detect(state)
    _check_variant(detected, variant)
    reference_state = layouts.to_reference(state, detected)
    times["read"] = time.perf_counter() - start

    start = time.perf_counter()
    progress.step(f"building the {target} model ({detected.variant or 'custom config'})")
    adapter, model = build_port(target, detected.config)
    values = transfer.to_port(reference_state, adapter.shapes(model))
    for path in progress.track(list(values), "assign"):
        adapter.assign(model, {path: values[path]})
    times["convert"] = time.perf_counter() - start

    start = time.perf_counter()
    progress.step("writing " + ", ".join(str(p) for p in paths))
    _save(target, model, paths)
    times["write"] = time.perf_counter() - start
    del model, values

    report = None
    if verify:
        start = time.perf_counter()
        shape = tuple(verify_shape or default_verify_shape(detected.config))
        progress.step(f"verifying against the PyTorch reference on input {list(shape)}")
        report = verify_files(target, paths, detected.config, reference_state, shape)
        times["verify"] = time.perf_counter() - start

    summary = Conversion(
        source=str(source),
        target=target if target != "keras" else f"keras-{_keras_backend()}",
        detected={
            "layout": detected.layout,
            "family": detected.config.family,
            "variant": detected.variant,
            "container": info,
            "config": config_to_dict(detected.config),
        },
        outputs=[str(p) for p in paths],
        seconds=times,
        verify=None if report is None else report.to_json(),
    )
    return summary, report


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


def asdict(conversion: Conversion) -> dict[str, Any]:
    return {**dataclasses.asdict(conversion), "passed": conversion.passed}

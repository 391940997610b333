"""Conversion in every direction between PyTorch checkpoints (any supported layout), Keras 3
``.keras`` files and Flax NNX ``.safetensors`` files: read the source, map it to the reference's
state dict, then write the target (a port model filled by the structural transfer, or a
checkpoint in a chosen PyTorch layout), atomically, and optionally verify the written file layer
by layer.

Every path goes through the reference's state dict (``{reference key: numpy array}``), so weights
arrive unchanged: the layout rules only transpose and rename, and a round trip through Keras and
Flax back to the source layout is bit-identical (tensors outside the model, such as detectron2's
detector heads, are dropped).

Only the frameworks a conversion needs are imported: reading a Flax file and writing a PyTorch
``.safetensors`` import none (NumPy and safetensors only); reading or writing Keras imports Keras
on the backend ``KERAS_BACKEND`` selects; ``.pth`` files need torch; ``--verify`` needs torch
(the reference) and the port being compared.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weight_convert import checkpoints, layouts, transfer
from weight_convert.checkpoints import CheckpointError
from weight_convert.progress import Progress
from zoo.configs import MODEL_CLASSES, VARIANTS, Config, config_from_dict, config_to_dict
from zoo.layout import Layout
from zoo.shapes import reference_shapes

__all__ = [
    "SOURCES",
    "TARGETS",
    "TORCH_SUFFIXES",
    "ConversionError",
    "LayoutChoiceError",
    "OutputExistsError",
    "Source",
    "convert",
    "default_layout",
    "family_layouts",
    "output_paths",
    "read_source",
    "write_torch",
]

#: what ``read_source`` accepts: a PyTorch checkpoint, a Keras ``.keras``, a Flax ``.safetensors``
SOURCES = ("torch", "keras", "flax")
#: target framework -> files written, by suffix (torch: the default; see ``TORCH_SUFFIXES``)
TARGETS = {"keras": (".keras", ".weights.h5"), "flax": (".safetensors",), "torch": (".pth",)}
#: PyTorch checkpoint files ``--to torch`` writes, by the suffix of ``-o``: ``torch.save`` for
#: .pth / .pt / .bin, ``safetensors.numpy`` for .safetensors, a pickle of NumPy arrays as
#: detectron2's model zoo ships them for .pkl (detectron2 layout only)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pkl")

#: (layout, family) -> the key releases in that layout nest the state dict under in a ``.pth``
#: (microsoft/Swin-Transformer loads ``checkpoint['model']``; mmaction's Video Swin releases hold
#: ``state_dict``). Others are written flat, as the segment-anything and timm releases are.
TORCH_WRAPPERS = {("official", "swin"): "model", ("official", "video_swin"): "state_dict"}

#: port variables assigned per call while converting (each call walks the model's variables)
_ASSIGN_BATCH = 32

#: Flax files written by ``ports.flax.serialization.save`` name the model and its config here
_FLAX_METADATA = ("model", "config")


class ConversionError(ValueError):
    """The checkpoint does not fit what was asked (another family or variant)."""


class LayoutChoiceError(ValueError):
    """A usage mistake about the PyTorch layout or output format (``--layout`` not defined for
    the family, ``--layout`` without ``--to torch``, a ``.pkl`` output for another layout)."""


class OutputExistsError(FileExistsError):
    """An output file exists and ``force`` was not given."""


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


@dataclass
class Source:
    """A file read into the reference's keys.

    ``kind`` is "torch", "keras" or "flax"; ``reference`` the reference model's state dict (its
    keys, in its order, numpy arrays); ``detected`` the layout detection of a PyTorch checkpoint
    (None for Keras / Flax files, whose config is stored in them); ``info`` what the reader found
    (container format, wrappers, metadata); ``model`` the loaded Keras model (Keras sources; a
    Flax source is loaded only for ``--verify``).
    """

    path: str
    kind: str
    config: Config
    reference: dict[str, np.ndarray]
    detected: layouts.Detected | None
    info: dict[str, Any]
    model: Any = None

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def variant(self) -> str | None:
        if self.detected is not None:
            return self.detected.variant
        return layouts.match_variant(self.config)

    @property
    def layout(self) -> str | None:
        """The PyTorch layout of a checkpoint source; None for Keras and Flax files."""
        return None if self.detected is None else self.detected.layout


# --------------------------------------------------------------------------- layouts


def family_layouts(family: str) -> list[str]:
    """The PyTorch layouts ``layouts.RULES`` defines for ``family``, in ``layouts.LAYOUTS``
    order."""
    found = {lay for lay, fam in layouts.RULES if fam == family}
    return [lay for lay in layouts.LAYOUTS if lay in found]


def default_layout(family: str) -> str:
    """``official`` where the family has an official layout, else its only layout (timm for SAM's
    encoder alone, detectron2 for ViTDet)."""
    known = family_layouts(family)
    return "official" if "official" in known else known[0]


def _choose_layout(family: str, layout: str | None) -> str:
    if layout is None:
        return default_layout(family)
    known = family_layouts(family)
    if layout not in known:
        raise LayoutChoiceError(
            f"no layout {layout!r} for {family} checkpoints; {family} has: {', '.join(known)}"
        )
    return layout


# --------------------------------------------------------------------------- output names


def _strip(name: str, suffixes: Sequence[str]) -> str:
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_paths(source: str | Path, target: str, output: str | Path | None) -> list[Path]:
    """Files for ``target``. Keras / Flax: ``output`` with its known suffix removed, or the
    source's stem in the current directory (``STEM_keras``), plus each of the target's suffixes.
    torch: ``output`` as it is when it ends in one of ``TORCH_SUFFIXES``, else ``output`` (default
    ``./STEM_torch``) plus ``.pth``."""
    if output is None:
        stem = _strip(Path(source).name, (*TORCH_SUFFIXES, ".keras"))
        base = Path.cwd() / f"{stem}_{target}"
    else:
        base = Path(output)
        if target == "torch" and base.name.endswith(TORCH_SUFFIXES):
            return [base]
        if target != "torch":
            base = base.with_name(_strip(base.name, TARGETS[target]))
    return [base.with_name(base.name + suffix) for suffix in TARGETS[target]]


# --------------------------------------------------------------------------- reading


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def port_to_reference(values: Mapping[str, np.ndarray], config: Config) -> dict[str, np.ndarray]:
    """The reference state dict (its keys, in its order) from port variables by dotted path
    (Keras or Flax layout), strict both ways: raises ``transfer.CoverageError`` for a missing or
    an extra tensor and ``transfer.ShapeMismatchError`` for a wrong shape."""
    state = transfer.to_torch(values)
    shapes = reference_shapes(config)
    unused = [k for k in state if k not in shapes]
    unset = [k for k in shapes if k not in state]
    if unused or unset:
        raise transfer.CoverageError(unused, unset)
    for key, shape in shapes.items():
        if tuple(state[key].shape) != shape:
            raise transfer.ShapeMismatchError(
                f"{key}: the file holds shape {tuple(state[key].shape)}, the model needs {shape}"
            )
    return {key: state[key] for key in shapes}


def _read_keras(path: str) -> Source:
    try:
        import keras

        import ports.keras.models  # noqa: F401  (registers the serializable classes)
        from weight_convert.frameworks import keras_port
    except ImportError as e:
        raise CheckpointError(f"reading {path} needs Keras 3 ({e})") from None
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 - any failure to load is one user-facing error
        raise CheckpointError(f"cannot read {path} as a Keras model: {_first_line(e)}") from None
    config = getattr(model, "config", None)
    if not isinstance(config, Config) or type(model).__name__ != MODEL_CLASSES[config.family]:
        raise CheckpointError(
            f"{path} holds a {type(model).__name__}, not a model of this zoo (ports.keras.models)"
        )
    info = {"format": "keras", "backend": keras.backend.backend(), "model": type(model).__name__}
    reference = port_to_reference(keras_port.read(model), config)
    return Source(path, "keras", config, reference, None, info, model)


def _read_flax(path: str, tensors: dict[str, np.ndarray], info: dict[str, Any]) -> Source:
    metadata = info["metadata"]
    try:
        config = config_from_dict(json.loads(metadata["config"]))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: Flax model file with an unreadable config ({e})") from None
    if metadata["model"] != MODEL_CLASSES[config.family]:
        raise CheckpointError(
            f"{path}: metadata names model {metadata['model']} but a {config.family} config"
        )
    info = {**info, "format": "flax", "model": metadata["model"]}
    return Source(path, "flax", config, port_to_reference(tensors, config), None, info)


def read_source(path: str | os.PathLike) -> Source:
    """Read ``path`` into the reference's keys: a Keras ``.keras`` file, a Flax ``.safetensors``
    written by ``ports.flax.serialization.save`` (told from a PyTorch ``.safetensors`` by its
    metadata), or a PyTorch checkpoint of a known layout (``.pth`` / ``.pt`` / ``.bin`` /
    ``.safetensors`` / detectron2 ``.pkl``).

    Raises ``CheckpointError`` (unreadable), ``layouts.LayoutError`` (unknown layout) or
    ``transfer.CoverageError`` / ``ShapeMismatchError`` (a port file whose tensors do not form
    its model).
    """
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        raise CheckpointError(
            f"{path} holds Keras weights without the model: convert the .keras file beside it"
        )
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise CheckpointError(f"no Keras model file at {path}")
        return _read_keras(path)
    tensors, info = checkpoints.load_state_dict(path)
    metadata = info.get("metadata") or {}
    if all(k in metadata for k in _FLAX_METADATA):
        return _read_flax(path, tensors, info)
    detected = layouts.detect(tensors)
    reference = layouts.to_reference(tensors, detected)
    return Source(path, "torch", detected.config, reference, detected, info)


def _check_variant(source: Source, variant: str | None) -> None:
    if variant is None:
        return
    expected = VARIANTS[variant].config
    got = source.config
    if expected.family != got.family:
        raise ConversionError(
            f"asked for {variant} ({expected.family}) but the checkpoint is a {got.family} model"
            + (f" ({source.variant})" if source.variant else "")
        )
    diffs = [
        f"{f}={getattr(got, f)} (expected {getattr(expected, f)})"
        for f in layouts.arch_fields(expected)
        if getattr(got, f) != getattr(expected, f)
    ]
    if diffs:
        raise ConversionError(f"checkpoint is not {variant}: " + ", ".join(diffs))


# --------------------------------------------------------------------------- verify inputs


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


# --------------------------------------------------------------------------- writing


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


def _atomic(paths: list[Path], write: Callable[[list[Path]], None]) -> None:
    """``write`` the files into a temporary directory beside the outputs, then rename each over
    its output: no half-written file under an output's name."""
    directory = paths[0].parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".weight-convert-", dir=directory))
    try:
        staged = [tmp / p.name for p in paths]
        write(staged)
        for src, dst in zip(staged, paths, strict=True):
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_port(target: str, model, paths: list[Path]) -> None:
    def write(staged: list[Path]) -> None:
        if target == "keras":
            model.save(str(staged[0]))
            model.save_weights(str(staged[1]))
        else:
            from ports.flax import serialization

            serialization.save(model, staged[0])

    _atomic(paths, write)


def write_torch(state: Mapping[str, np.ndarray], path: str | Path, layout: str, family: str):
    """Write a PyTorch checkpoint in ``layout``'s keys (``state``: from
    ``layouts.from_reference``), the format chosen by the suffix of ``path``:

    - ``.pth`` / ``.pt`` / ``.bin``: ``torch.save`` of the flat ``{key: tensor}`` dict, nested
      under ``TORCH_WRAPPERS[(layout, family)]`` where that layout's releases nest it;
    - ``.safetensors``: ``safetensors.numpy`` (no framework), metadata ``{"format": "pt"}``;
    - ``.pkl``: detectron2's model-zoo pickle ``{"model": {key: ndarray}, "__author__": ...,
      "matching_heuristics": True}`` (detectron2 layout only).

    Atomic (temporary file, then rename). The arrays keep their dtypes.
    """
    path = Path(path)
    if path.name.endswith(".pkl") and layout != "detectron2":
        raise LayoutChoiceError(
            f"{path.name}: .pkl is detectron2's format; write {layout} checkpoints as .pth, .pt, "
            ".bin or .safetensors"
        )
    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}

    def write(staged: list[Path]) -> None:
        (out,) = staged
        if out.name.endswith(".safetensors"):
            try:
                from safetensors.numpy import save_file
            except ImportError as e:
                raise OSError(f"writing {path} needs the safetensors package ({e})") from None
            save_file(arrays, str(out), metadata={"format": "pt"})
        elif out.name.endswith(".pkl"):
            data = {"model": arrays, "__author__": "weight-convert", "matching_heuristics": True}
            with open(out, "wb") as f:
                pickle.dump(data, f, protocol=4)
        else:
            try:
                import torch
            except ImportError as e:
                raise OSError(f"writing {path} needs PyTorch ({e})") from None
            tensors = {
                k: torch.from_numpy(v if v.flags.writeable else v.copy()) for k, v in arrays.items()
            }
            wrapper = TORCH_WRAPPERS.get((layout, family))
            torch.save({wrapper: tensors} if wrapper else tensors, str(out))

    _atomic([path], write)


# --------------------------------------------------------------------------- verifying


def _load_saved(target: str, paths: list[Path]):
    if target == "keras":
        import keras

        import ports.keras.models  # noqa: F401  (registers the serializable classes)

        return keras.saving.load_model(str(paths[0]))
    from ports.flax import serialization

    return serialization.load(paths[0])


def _reference_model(config: Config, state: Mapping[str, np.ndarray]):
    import zoo.models
    from weight_convert.frameworks import reference as ref_fw

    reference = getattr(zoo.models, MODEL_CLASSES[config.family])(config).eval()
    ref_fw.load_state_dict(reference, state)
    return reference


def _compare(reference, model, framework: str, config: Config, shape, name: str, seed: int):
    from weight_convert import parity
    from weight_convert.frameworks import port

    inputs, input_layouts = verify_inputs(config, shape, seed)
    return parity.compare(
        reference,
        model,
        port(framework),
        inputs,
        input_layouts,
        tolerance=parity.MODEL_TOLERANCE,
        name=f"{name}{list(shape)}",
        transfer_weights=False,
    )


def verify_files(
    target: str,
    paths: list[Path],
    config: Config,
    reference_state: dict[str, np.ndarray],
    shape: Sequence[int],
    seed: int = 0,
):
    """Load the written Keras / Flax model back and compare it with the PyTorch reference
    holding the source's weights, layer by layer, on N(0, 1) input of ``shape``."""
    reference = _reference_model(config, reference_state)
    model = _load_saved(target, paths)
    return _compare(reference, model, target, config, shape, Path(paths[0]).name, seed)


def read_torch_file(path: str | Path, layout: str, config: Config) -> dict[str, np.ndarray]:
    """A written PyTorch checkpoint read back into the reference's keys, strictly in ``layout``
    with ``config``'s architecture (``layouts.LayoutError`` otherwise)."""
    state, _ = checkpoints.load_state_dict(path)
    asked = layouts.Detected(layout, config.family, config, layouts.match_variant(config))
    return layouts.to_reference(state, asked)


def _exact_report(name: str, got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]):
    """Tensor-by-tensor report of a checkpoint against another (bound 0: bit-identical)."""
    from weight_convert.parity import LayerError, ParityReport

    def error(key: str, a: np.ndarray, b: np.ndarray) -> LayerError:
        if a.shape != b.shape:
            diff = np.inf
        else:
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
            if a.dtype != b.dtype:  # equal values in another dtype are not the same checkpoint
                diff = diff or np.inf
        peak = float(np.max(np.abs(b.astype(np.float64)), initial=0))
        return LayerError(key, 0, tuple(b.shape), diff, diff / max(peak, 1e-30), 0.0)

    rows = [error(k, np.asarray(got[k]), np.asarray(want[k])) for k in want]
    worst = max(rows, key=lambda e: e.max_abs)
    total = LayerError("<all tensors>", 0, (len(rows),), worst.max_abs, worst.max_rel, 0.0)
    return ParityReport(name, "torch (tensors, bit-exact)", [total], rows)


def verify_torch(path: Path, layout: str, source: Source, shape: Sequence[int], seed: int = 0):
    """Read the written checkpoint back through ``checkpoints`` and ``layouts`` into the PyTorch
    reference and compare it layer by layer with the source's port model (a Keras or Flax
    source). A PyTorch source (a layout change) is compared tensor by tensor: bit-identical."""
    back = read_torch_file(path, layout, source.config)
    if source.kind == "torch":
        return _exact_report(f"{path.name} vs {Path(source.path).name}", back, source.reference)
    reference = _reference_model(source.config, back)
    model = source.model
    if model is None:  # a Flax source: load it now
        from ports.flax import serialization

        model = serialization.load(source.path)
    return _compare(reference, model, source.kind, source.config, shape, path.name, seed)


# --------------------------------------------------------------------------- convert


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
    progress: Progress | None = None,
) -> tuple[Conversion, Any]:
    """Convert the file at ``source`` (PyTorch checkpoint, Keras ``.keras`` or Flax
    ``.safetensors``) to ``target``: "keras", "flax", or "torch" in ``layout`` (default
    ``default_layout(family)``).

    Returns the ``Conversion`` summary and the verification ``ParityReport`` (or None).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    if layout is not None and target != "torch":
        raise LayoutChoiceError(f"a layout is chosen only for --to torch (not {target})")
    progress = progress or Progress(enabled=False)
    paths = output_paths(source, target, output)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"output exists: {', '.join(existing)} (use --force to replace)")
    times: dict[str, float] = {}

    start = time.perf_counter()
    progress.step(f"reading {source}")
    src = read_source(source)
    _check_variant(src, variant)
    if target == "torch":
        layout = _choose_layout(src.family, layout)
    times["read"] = time.perf_counter() - start

    start = time.perf_counter()
    if target == "torch":
        progress.step(f"mapping to the {layout} layout ({src.variant or 'custom config'})")
        state = layouts.from_reference(src.reference, layout, src.family, src.config)
        times["convert"] = time.perf_counter() - start
        start = time.perf_counter()
        progress.step(f"writing {paths[0]}")
        write_torch(state, paths[0], layout, src.family)
        del state
    else:
        progress.step(f"building the {target} model ({src.variant or 'custom config'})")
        adapter, model = build_port(target, src.config)
        values = transfer.to_port(src.reference, adapter.shapes(model))
        paths_in_order, batch = list(values), {}
        for path in progress.track(paths_in_order, "assign"):
            batch[path] = values[path]  # in batches: each assign walks the model's variables
            if len(batch) == _ASSIGN_BATCH or path == paths_in_order[-1]:
                adapter.assign(model, batch)
                batch = {}
        times["convert"] = time.perf_counter() - start
        start = time.perf_counter()
        progress.step("writing " + ", ".join(str(p) for p in paths))
        _save_port(target, model, paths)
        del model, values
    times["write"] = time.perf_counter() - start

    report = None
    if verify:
        start = time.perf_counter()
        shape = tuple(verify_shape or default_verify_shape(src.config))
        if target == "torch":
            against = "the source" if src.kind == "torch" else f"the {src.kind} source"
            progress.step(f"verifying the written checkpoint against {against}")
            report = verify_torch(paths[0], layout, src, shape)
        else:
            progress.step(f"verifying against the PyTorch reference on input {list(shape)}")
            report = verify_files(target, paths, src.config, src.reference, shape)
        times["verify"] = time.perf_counter() - start

    summary = Conversion(
        source=str(source),
        target=target if target != "keras" else f"keras-{_keras_backend()}",
        detected={
            "source": src.kind,
            "layout": src.layout,
            "family": src.family,
            "variant": src.variant,
            "container": src.info,
            "notes": list(src.detected.notes) if src.detected else [],
            "config": config_to_dict(src.config),
        },
        outputs=[str(p) for p in paths],
        layout=layout,
        seconds=times,
        verify=None if report is None else report.to_json(),
    )
    return summary, report


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


def asdict(conversion: Conversion) -> dict[str, Any]:
    return {**dataclasses.asdict(conversion), "passed": conversion.passed}

"""Conversion in every direction between PyTorch checkpoints (any supported layout), Keras 3
``.keras`` / ``.weights.h5`` files and Flax NNX ``.safetensors`` / ``.msgpack`` files: read the
source, map it to the reference's state dict, then write the target (a port model's files or a
checkpoint in a chosen PyTorch layout) one tensor at a time, atomically, and optionally verify
the written file layer by layer.

Every path goes through the reference's state dict (``{reference key: array or LazyTensor}``),
so weights
arrive unchanged: the layout rules only transpose and rename, and a round trip through Keras and
Flax back to the source layout is bit-identical (tensors outside the model, such as detectron2's
detector heads, are dropped).

Only the frameworks a conversion needs are imported: reading a Flax file and writing a PyTorch
``.safetensors`` import none (NumPy only); reading or writing Keras imports Keras
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
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weight_convert import checkpoints, layouts, port_files, rules, safetensors_io, transfer
from weight_convert.errors import (
    CheckpointError,
    MissingKeysError,
    NonFiniteError,
    OutputExistsError,
    OutputNotWritableError,
    ShapeMismatchError,
    UnexpectedKeysError,
    UsageError,
    WrongFormatError,
    WrongModelError,
)
from weight_convert.progress import Progress
from weight_convert.tensors import FLOAT_DTYPES, LazyTensor, is_float, release, torch_dtype
from zoo import compat
from zoo.configs import (
    VARIANTS,
    Config,
    arch_fields,
    config_from_dict,
    config_to_dict,
    family_of,
    is_config,
    match_variant,
    reference_shapes,
)
from zoo.tensor_format import Format

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
#: PyTorch checkpoint files ``--to torch`` writes, by the suffix of ``-o``: ``torch.save``'s zip
#: for .pth / .pt / .bin, safetensors for .safetensors, a pickle of NumPy arrays as detectron2's
#: model zoo ships them for .pkl (detectron2 layout only)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pkl")

#: Flax files written by ``ports.flax.serialization.save`` name the model and its config here
_FLAX_METADATA = ("model", "config")


#: the checkpoint does not fit what was asked (another family or variant)
ConversionError = WrongModelError
#: a usage mistake about the PyTorch layout or output format (``--layout`` not defined for the
#: family, ``--layout`` without ``--to torch``, a ``.pkl`` output for another layout)
LayoutChoiceError = UsageError


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
    (container format, wrappers, metadata); ``model`` the loaded Keras model (``.keras``
    sources; other port files are loaded only for ``--verify``). Values are arrays or
    ``LazyTensor``s.
    """

    path: str
    kind: str
    config: Config
    reference: dict[str, Any]
    detected: layouts.Detected | None
    info: dict[str, Any]
    model: Any = None
    #: reference keys the file lacks, allowed by ``--allow-missing`` (left at initialization)
    missing: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def variant(self) -> str | None:
        if self.detected is not None:
            return self.detected.variant
        return match_variant(self.config)

    @property
    def layout(self) -> str | None:
        """The PyTorch layout of a checkpoint source; None for Keras and Flax files."""
        return None if self.detected is None else self.detected.layout


# --------------------------------------------------------------------------- layouts


family_layouts = layouts.family_layouts
default_layout = layouts.default_layout


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
    ``./STEM_torch``) plus ``.pth``. flax: ``output`` as it is when it ends in ``.msgpack``."""
    if output is None:
        stem = _strip(Path(source).name, (*TORCH_SUFFIXES, ".keras", ".weights.h5", ".msgpack"))
        base = Path.cwd() / f"{stem}_{target}"
    else:
        base = Path(output)
        if target == "torch" and base.name.endswith(TORCH_SUFFIXES):
            return [base]
        if target == "flax" and base.name.endswith(".msgpack"):
            return [base]
        if target != "torch":
            base = base.with_name(_strip(base.name, TARGETS[target]))
    return [base.with_name(base.name + suffix) for suffix in TARGETS[target]]


# --------------------------------------------------------------------------- reading


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def port_to_reference(
    values: Mapping[str, Any], config: Config, allow: layouts.Allow = layouts.STRICT
) -> tuple[dict[str, Any], list[str]]:
    """The reference state dict (its keys, in its order) from port variables by dotted path
    (Keras or Flax layout; arrays or ``LazyTensor``s, which stay lazy), and the reference keys
    missing by ``allow``. Strict both ways otherwise: ``MissingKeysError``,
    ``UnexpectedKeysError``, ``ShapeMismatchError``."""
    state: dict[str, Any] = {}
    ports_of: dict[str, str] = {}
    for path, value in values.items():
        key = rules.torch_key(path)
        if key in state:
            raise CheckpointError(f"{ports_of[key]} and {path} both map to {key}")
        ports_of[key] = path
        if isinstance(value, LazyTensor):
            shape = rules.torch_shape(path, value.shape)
            state[key] = value.map(lambda x, path=path: rules.torch_tensor(path, x), shape)
        else:
            state[key] = rules.torch_tensor(path, np.asarray(value))
    shapes = reference_shapes(config)
    unused = [ports_of[k] for k in state if k not in shapes]
    unused = [p for p in unused if not allow.allows_unused(p, rules.torch_key(p))]
    if unused:
        raise UnexpectedKeysError(unused, f"{family_of(config).model} file")
    unset = [k for k in shapes if k not in state]
    missing = [k for k in unset if allow.allows_missing(k)]
    if len(missing) < len(unset):
        raise MissingKeysError(
            [k for k in unset if k not in missing], f"{family_of(config).model} file"
        )
    for key, shape in shapes.items():
        if key in state and tuple(state[key].shape) != shape:
            raise ShapeMismatchError(
                f"{key}: the file holds shape {tuple(state[key].shape)}, the model needs {shape}"
            )
    return {key: state[key] for key in shapes if key in state}, missing


def _read_keras(path: str, allow: layouts.Allow) -> Source:
    try:
        import keras

        import ports.keras.models  # noqa: F401  (registers the serializable classes)
        from weight_convert.frameworks import keras_port
    except ImportError as e:
        raise CheckpointError(f"reading {path} needs Keras 3 ({e})") from None
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 - any failure to load is one user-facing error
        raise CheckpointError(
            f"cannot read {path} as a Keras model (truncated or corrupt?): {_first_line(e)}"
        ) from None
    config = getattr(model, "config", None)
    if not is_config(config) or type(model).__name__ != family_of(config).model:
        raise WrongFormatError(
            f"{path} holds a {type(model).__name__}, not a model of this zoo (ports.keras.models)"
        )
    info = {"format": "keras", "backend": keras.backend.backend(), "model": type(model).__name__}
    reference, missing = port_to_reference(
        _stored_dtype(path, keras_port.read(model)), config, allow
    )
    return Source(path, "keras", config, reference, None, info, model, missing)


def _stored_dtype(path: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras loads float16 / bfloat16 weights into float32 variables (exactly): give the values
    back the dtype the file stores them in."""
    stored = port_files.keras_file_dtype(path)
    if stored is None or stored == "float32":
        return values
    return {
        p: v.astype(FLOAT_DTYPES[stored]) if is_float(v.dtype) else v for p, v in values.items()
    }


def _read_keras_weights(path: str, allow: layouts.Allow, variant: str | None) -> Source:
    """A bare ``.weights.h5``: the model is the one its ``vit_zoo_config`` attribute names (this
    tool writes it), else ``--variant``."""
    try:
        config = port_files.read_config_attr(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path} (truncated or corrupt?): {_first_line(e)}"
        ) from None
    if config is None:
        if variant is None:
            raise UsageError(
                f"{path} holds Keras weights without naming their model: give --variant NAME"
            )
        config = VARIANTS[variant].config
    try:
        values = port_files.read_keras_weights_h5(path, config)
    except (OSError, ValueError) as e:
        raise WrongModelError(
            f"{path} does not hold {family_of(config).model} weights of this config: "
            f"{_first_line(e)}"
        ) from None
    info = {"format": "keras-weights", "model": family_of(config).model}
    reference, missing = port_to_reference(values, config, allow)  # already in the stored dtype
    return Source(path, "keras", config, reference, None, info, missing=missing)


def _read_flax_msgpack(path: str, allow: layouts.Allow) -> Source:
    """A Flax msgpack (the nested pure dict of the nnx state): no config inside, so the
    architecture is solved from the variables' paths and shapes."""
    try:
        values = port_files.read_flax_msgpack(path)
    except Exception as e:  # noqa: BLE001 - any failure to unpack is one user-facing error
        raise CheckpointError(
            f"cannot read {path} as a Flax msgpack file (truncated or corrupt?): {_first_line(e)}"
        ) from None
    config, notes = port_files.infer_port_config({p: tuple(v.shape) for p, v in values.items()})
    info = {"format": "flax-msgpack", "model": family_of(config).model, "notes": notes}
    reference, missing = port_to_reference(values, config, allow)
    return Source(path, "flax", config, reference, None, info, missing=missing)


def _read_flax(
    path: str, tensors: Mapping[str, LazyTensor], info: dict[str, Any], allow: layouts.Allow
) -> Source:
    metadata = info["metadata"]
    try:
        config = config_from_dict(json.loads(metadata["config"]))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: Flax model file with an unreadable config ({e})") from None
    if metadata["model"] != family_of(config).model:
        raise CheckpointError(
            f"{path}: metadata names model {metadata['model']} but a {config.family} config"
        )
    info = {**info, "format": "flax", "model": metadata["model"]}
    reference, missing = port_to_reference(tensors, config, allow)
    return Source(path, "flax", config, reference, None, info, missing=missing)


def read_source(
    path: str | os.PathLike, allow: layouts.Allow = layouts.STRICT, variant: str | None = None
) -> Source:
    """Read ``path`` into the reference's keys: a Keras ``.keras`` file, a Flax ``.safetensors``
    written by this tool (told from a PyTorch ``.safetensors`` by its metadata), or a PyTorch
    checkpoint of a known layout (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors`` / detectron2
    ``.pkl``). Tensors of checkpoints and Flax files stay ``LazyTensor``s until written.

    Raises the ``weight_convert.errors`` kind of each failure: ``MissingFileError``,
    ``EmptyFileError``, ``NotACheckpointError``, ``WrongFormatError``, ``CheckpointError``
    (truncated / corrupt), ``UnsafePickleError``, ``LayoutError`` (no known layout),
    ``MissingKeysError`` / ``UnexpectedKeysError`` (beyond ``allow``), ``ShapeMismatchError``.
    """
    path = os.fspath(path)
    content = checkpoints.sniff(path)
    if content == "hdf5":
        return _read_keras_weights(path, allow, variant)
    if content == "zip" and path.endswith(".keras"):
        return _read_keras(path, allow)
    if content == "msgpack":
        return _read_flax_msgpack(path, allow)
    tensors, info = checkpoints.open_state_dict(path)
    metadata = info.get("metadata") or {}
    if all(k in metadata for k in _FLAX_METADATA):
        return _read_flax(path, tensors, info, allow)
    detected = layouts.detect(tensors, allow)
    reference = layouts.to_reference(tensors, detected)
    return Source(
        path, "torch", detected.config, reference, detected, info, missing=detected.missing
    )


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
        for f in arch_fields(expected)
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
) -> tuple[list[np.ndarray], list[Format]]:
    """The reference inputs ``--verify`` runs: N(0, 1) images of ``shape``; a full SAM model also
    gets two prompt points (one foreground, one background) inside the image."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(tuple(shape), dtype=np.float32)
    if config.family != "sam":
        return [image], [Format.CHANNELS_FIRST]
    size = np.asarray(shape[-2:][::-1], np.float32)  # (W, H): points are (x, y)
    coords = (rng.uniform(0.05, 0.95, (shape[0], 2, 2)) * size).astype(np.float32)
    labels = np.tile(np.array([[1, 0]], np.int32), (shape[0], 1))
    return [image, coords, labels], [
        Format.CHANNELS_FIRST,
        Format.CHANNELS_LAST,
        Format.CHANNELS_LAST,
    ]


# --------------------------------------------------------------------------- writing


class Tensors:
    """Loads each tensor as it is written: checks it for NaN / Inf (collected, raised by
    ``check`` once the pass is over unless ``allow_nonfinite``) and casts floating tensors to
    ``dtype`` (None: keep each tensor's dtype)."""

    def __init__(self, dtype: str | None = None, allow_nonfinite: bool = False) -> None:
        if dtype is not None and dtype not in FLOAT_DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}; choose {', '.join(FLOAT_DTYPES)}")
        self.dtype = None if dtype is None else FLOAT_DTYPES[dtype]
        self.allow_nonfinite = allow_nonfinite
        self.nonfinite: dict[str, tuple[int, int]] = {}

    def __call__(self, key: str, value: Any) -> np.ndarray:
        array = value.load() if isinstance(value, LazyTensor) else np.asarray(value)
        if not is_float(array.dtype):
            return array
        if not self.allow_nonfinite:
            finite = np.isfinite(array)
            if not finite.all():
                nan = int(np.isnan(array).sum())
                self.nonfinite[key] = (nan, int(finite.size - finite.sum()) - nan)
        if self.dtype is not None and array.dtype != self.dtype:
            array = array.astype(self.dtype)
        return array

    def out_dtype(self, value: Any) -> np.dtype:
        dtype = np.dtype(value.dtype)
        return self.dtype if self.dtype is not None and is_float(dtype) else dtype

    def check(self) -> None:
        if self.nonfinite:
            keys = list(self.nonfinite)
            shown = ", ".join(
                f"{k} ({nan} NaN, {inf} Inf)" for k, (nan, inf) in list(self.nonfinite.items())[:4]
            )
            more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
            raise NonFiniteError(
                f"{len(keys)} tensor(s) hold NaN or Inf: {shown}{more} (--allow-nonfinite "
                "converts them anyway)"
            )


def build_port(target: str, config: Config, initialized: bool = False):
    """(adapter, model) for ``target`` built from ``config``. Keras variables are created
    (initialized); a Flax model is abstract (shapes only: every variable is set before it is
    written) unless ``initialized``."""
    from weight_convert.frameworks import port

    adapter = port(target)
    if target == "keras":
        from ports.keras.models import build_model

        model = build_model(config)
    elif initialized:
        from ports.flax.models import build_model

        model = build_model(config)
    else:
        from ports.flax.models import abstract_model

        model = abstract_model(config)
        model.eval()
    return adapter, model


def check_writable(paths: Sequence[Path]) -> None:
    """Raise ``OutputNotWritableError`` unless the outputs' directory exists and can be written
    or can be created (checked before anything is read)."""
    directory = Path(paths[0]).parent.absolute()
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputNotWritableError(f"cannot write {paths[0]}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"cannot write {paths[0]}: {probe} is not writable")


def _atomic(paths: list[Path], write: Callable[[list[Path]], None]) -> None:
    """``write`` the files into a temporary directory beside the outputs, then rename each over
    its output: no half-written file under an output's name, and nothing left when ``write``
    fails. An ``OSError`` on the way is an ``OutputNotWritableError``."""
    directory = paths[0].parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".weight-convert-", dir=directory))
    except OSError as e:
        raise OutputNotWritableError(f"cannot write into {directory}: {e.strerror}") from None
    try:
        staged = [tmp / p.name for p in paths]
        try:
            write(staged)
            for src, dst in zip(staged, paths, strict=True):
                os.replace(src, dst)
        except OSError as e:
            if isinstance(e, (OutputExistsError, OutputNotWritableError)):
                raise
            raise OutputNotWritableError(
                f"cannot write {paths[0]}: {e.strerror or _first_line(e)}"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stream_safetensors(
    out: Path,
    items: Iterable[tuple[str, str, Any]],
    tensors: Tensors,
    metadata: Mapping[str, str],
    progress: Progress,
) -> None:
    """Write ``(name, key, value)`` items one at a time (load, check, cast, write, release)
    after the header, which the values' shapes and dtypes give before any is loaded."""
    items = list(items)
    entries = [(name, tuple(value.shape), tensors.out_dtype(value)) for name, _, value in items]
    writer = safetensors_io.StreamWriter(out, entries, metadata)
    try:
        for name, key, value in progress.track(items, "write"):
            writer.add(name, tensors(key, value))
            release(value)
        tensors.check()
    except BaseException:
        writer.abort()
        raise
    writer.close()


def _as_lazy(value: Any) -> LazyTensor:
    if isinstance(value, LazyTensor):
        return value
    array = np.asarray(value)
    return LazyTensor(array.shape, array.dtype, lambda: array)


def port_values(
    source: Source,
    shapes: Mapping[str, tuple[int, ...]],
    initialized: Callable[[], Mapping[str, np.ndarray]],
) -> dict[str, tuple[str, LazyTensor]]:
    """Port path -> (source key, lazy value in the port's layout) for every variable of a port
    model with ``shapes``; every shape is checked before anything is loaded
    (``ShapeMismatchError``). Variables of tensors ``source.missing`` names take their values
    from ``initialized()`` (a freshly initialized model's, by port path)."""
    missing = set(source.missing)
    fresh = [p for p in shapes if rules.torch_key(p) in missing]
    plan = transfer.plan_to_port(shapes, source.reference, allow_missing=fresh)
    initial = {p: v for p, v in initialized().items() if p in fresh} if fresh else {}
    out = {}
    for port_path, shape in shapes.items():
        if port_path in initial:
            out[port_path] = (port_path, _as_lazy(initial[port_path]))
            continue
        key = plan[port_path]
        value = _as_lazy(source.reference[key])
        got = rules.port_shape(port_path, value.shape)
        if got != tuple(shape):
            raise ShapeMismatchError(
                f"{key}: shape {value.shape} gives {got} for {port_path}, which expects "
                f"{tuple(shape)}"
            )
        out[port_path] = (key, value.map(lambda x, p=port_path: rules.port_tensor(p, x), got))
    return out


def write_flax(
    source: Source, path: Path, tensors: Tensors, progress: Progress | None = None
) -> None:
    """The Flax ``.safetensors`` file of ``ports.flax.serialization`` (every checkpoint variable
    by nnx path, config in the metadata) or, for a ``.msgpack`` path, the msgpack of the nnx
    state's pure dict (``port_files.write_flax_msgpack``), streamed: the model is built
    abstractly (shapes only) and each tensor is loaded, rearranged and written in turn. Tensors
    ``source.missing`` names come from a freshly initialized model."""
    from ports.flax.serialization import FORMAT

    progress = progress or Progress(enabled=False)
    adapter, model = build_port("flax", source.config)

    def initialized() -> Mapping[str, np.ndarray]:
        return adapter.read(build_port("flax", source.config, initialized=True)[1])

    planned = port_values(source, adapter.shapes(model), initialized)
    if path.name.endswith(".msgpack"):

        def write_msgpack(staged: list[Path]) -> None:
            checked = [
                (
                    name,
                    LazyTensor(
                        v.shape,
                        tensors.out_dtype(v),
                        lambda k=key, v=v: tensors(k, v),
                        lambda v=v: release(v),
                    ),
                )
                for name, (key, v) in planned.items()
            ]
            port_files.write_flax_msgpack(staged[0], progress.track(checked, "write"))
            tensors.check()

        _atomic([path], write_msgpack)
        return
    metadata = {
        "format": FORMAT,
        "model": family_of(source.config).model,
        "config": json.dumps(config_to_dict(source.config)),
    }
    items = [(name, key, value) for name, (key, value) in planned.items()]
    _atomic(
        [path],
        lambda staged: _stream_safetensors(staged[0], items, tensors, metadata, progress),
    )


def write_keras(
    source: Source, paths: list[Path], tensors: Tensors, progress: Progress | None = None
) -> None:
    """``OUT.keras`` and ``OUT.weights.h5``, streamed: the Keras model is built without values
    (``keras_port.abstract_model``) and Keras' own saver pulls each variable's value, loaded,
    rearranged and checked just then (``keras_port.save_streamed``). Tensors ``source.missing``
    names come from a freshly initialized model."""
    from weight_convert.frameworks import keras_port

    progress = progress or Progress(enabled=False)
    model = keras_port.abstract_model(source.config)
    shapes = keras_port.shapes(model)
    planned = port_values(
        source, shapes, lambda: keras_port.read(build_port("keras", source.config)[1])
    )
    bar = iter(progress.track(range(len(shapes)), "write"))

    def value_of(port_path: str) -> np.ndarray:
        next(bar, None)
        key, value = planned[port_path]
        array = tensors(key, value)
        release(value)
        return array

    def write(staged: list[Path]) -> None:
        count = keras_port.save_streamed(
            model, staged[1], staged[0], value_of, lambda: build_port("keras", source.config)[1]
        )
        if count != len(shapes):
            raise RuntimeError(f"Keras saved {count} of the model's {len(shapes)} variables")
        port_files.write_config_attr(staged[1], source.config)  # a bare .weights.h5 names it
        next(bar, None)
        tensors.check()

    _atomic(paths, write)


def _zip_records(path: Path) -> dict[int, tuple[int, int, int, int]]:
    """Storage key -> (offset of its data, size, offset of its local header, offset of its
    central directory entry) of the ``data/<key>`` records of a ``torch.save`` zip (stored
    uncompressed, so a record's bytes lie at one offset)."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        central = zf.start_dir
    records = {}
    with open(path, "rb") as f:
        for info in infos:
            f.seek(central)
            entry = f.read(46)  # central directory entry: name / extra / comment lengths at 28
            lengths = [int.from_bytes(entry[i : i + 2], "little") for i in (28, 30, 32)]
            here, central = central, central + 46 + sum(lengths)
            head, _, key = info.filename.rpartition("/")
            if not head.endswith("/data") or not key.isdigit():
                continue
            f.seek(info.header_offset)
            local = f.read(30)  # local header: name and extra field lengths at 26, 28
            names = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
            data = info.header_offset + 30 + names
            records[int(key)] = (data, info.file_size, info.header_offset, here)
    return records


def _stream_pth(
    out: Path,
    items: list[tuple[str, str, Any]],
    tensors: Tensors,
    wrapper: str | None,
    progress: Progress,
) -> None:
    """A ``torch.save`` checkpoint written one tensor at a time: ``torch.save`` writes the file
    from fake tensors (shapes and dtypes, no data) under ``torch.serialization.skip_data``,
    which leaves each storage's bytes as reserved space, then each tensor's bytes are loaded,
    checked and written into its record (``torch.save`` numbers storages in pickling order) and
    the record's CRC-32 set in the zip's headers."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise UsageError(f"writing {out.name} needs PyTorch ({e}); write .safetensors") from None
    from weight_convert.tensors import to_torch

    by_name = {name: (key, value) for name, key, value in items}
    skeleton = compat.torch_save_skeleton(
        out,
        {name: (value.shape, torch_dtype(tensors.out_dtype(value))) for name, _, value in items},
        wrapper,
        lambda name: to_torch(np.ascontiguousarray(tensors(*by_name[name]))),
    )
    if not skeleton:  # the fallback wrote the whole file
        tensors.check()
        return
    records = _zip_records(out)
    sizes = [
        (records.get(i, (0, -1))[1], int(np.prod(v.shape)) * tensors.out_dtype(v).itemsize)
        for i, (_, _, v) in enumerate(items)
    ]
    if len(records) != len(items) or any(a != b for a, b in sizes):
        raise RuntimeError(f"{out.name}: torch.save laid out the storages unexpectedly")
    with open(out, "r+b") as f:
        for i, (_, key, value) in enumerate(progress.track(items, "write")):
            data, _, local, central = records[i]
            raw = memoryview(np.ascontiguousarray(tensors(key, value)).reshape(-1).view(np.uint8))
            f.seek(data)
            f.write(raw)
            crc = zlib.crc32(raw).to_bytes(4, "little")  # the zip's CRC-32 of the real bytes
            for header, at in ((local, 14), (central, 16)):
                f.seek(header + at)
                f.write(crc)
            release(value)
    tensors.check()


def write_torch(
    state: Mapping[str, Any],
    path: str | Path,
    layout: str,
    family: str,
    tensors: Tensors | None = None,
    progress: Progress | None = None,
) -> None:
    """Write a PyTorch checkpoint in ``layout``'s keys (``state``: from
    ``layouts.from_reference``; arrays or ``LazyTensor``s), the format chosen by the suffix of
    ``path``:

    - ``.safetensors``: streamed one tensor at a time (no framework), metadata
      ``{"format": "pt"}``;
    - ``.pth`` / ``.pt`` / ``.bin``: ``torch.save``'s zip of the flat ``{key: tensor}`` dict,
      nested under ``layouts.torch_wrapper(layout, family)`` where that layout's releases nest it,
      streamed too (``_stream_pth``);
    - ``.pkl``: detectron2's model-zoo pickle ``{"model": {key: ndarray}, "__author__": ...,
      "matching_heuristics": True}`` (detectron2 layout only).

    Atomic (temporary file, then rename). dtypes are kept unless ``tensors`` casts them.
    """
    path = Path(path)
    tensors = tensors or Tensors(allow_nonfinite=True)
    progress = progress or Progress(enabled=False)
    if path.name.endswith(".pkl") and layout != "detectron2":
        raise LayoutChoiceError(
            f"{path.name}: .pkl is detectron2's format; write {layout} checkpoints as .pth, .pt, "
            ".bin or .safetensors"
        )
    if path.name.endswith(".safetensors"):
        items = ((k, k, v) for k, v in state.items())
        _atomic(
            [path],
            lambda staged: _stream_safetensors(
                staged[0], items, tensors, {"format": "pt"}, progress
            ),
        )
        return

    wrapper = layouts.torch_wrapper(layout, family)
    if not path.name.endswith(".pkl"):
        items = [(k, k, v) for k, v in state.items()]
        _atomic([path], lambda staged: _stream_pth(staged[0], items, tensors, wrapper, progress))
        return

    def write(staged: list[Path]) -> None:
        arrays = {}
        for key, value in progress.track(list(state.items()), "load"):
            arrays[key] = np.ascontiguousarray(tensors(key, value))
        tensors.check()
        data = {"model": arrays, "__author__": "weight-convert", "matching_heuristics": True}
        with open(staged[0], "wb") as f:
            pickle.dump(data, f, protocol=4)

    _atomic([path], write)


# --------------------------------------------------------------------------- verifying


def _load_port_file(kind: str, path: str | Path, config: Config):
    """The Keras / Flax model of a file this tool reads or writes, float32, for ``--verify``."""
    path = str(path)
    if kind == "keras":
        import keras

        import ports.keras.models  # noqa: F401  (registers the serializable classes)

        if path.endswith(".keras"):
            return keras.saving.load_model(path)
        from ports.keras.models import build_model

        model = build_model(config)
        model.load_weights(path)
        return model
    from ports.flax import serialization

    if not path.endswith(".msgpack"):
        return serialization.load(path)
    from weight_convert.frameworks import flax_port

    _, model = build_port("flax", config)
    flax_port.assign(model, port_files.read_flax_msgpack(path))
    return model


def _reference_model(config: Config, state: Mapping[str, np.ndarray]):
    import zoo.models
    from weight_convert.frameworks import reference as ref_fw

    reference = zoo.models.build_model(config)
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
    holding the source's weights, layer by layer, on N(0, 1) input of ``shape``. Tensors the
    source lacked (``--allow-missing``) are given to the reference from the written model."""
    model = _load_port_file(target, paths[0], config)
    reference = _reference_model(config, _completed(reference_state, model, target, config))
    return _compare(reference, model, target, config, shape, Path(paths[0]).name, seed)


def _completed(state: Mapping[str, Any], model, kind: str, config: Config) -> Mapping[str, Any]:
    """``state`` with the reference keys it lacks (``--allow-missing``) taken from the port
    ``model`` (Keras or Flax), so the reference and the port hold the same weights."""
    if len(state) == len(reference_shapes(config)):
        return state
    from weight_convert.frameworks import port

    written, _ = port_to_reference(port(kind).read(model), config)
    return {k: state.get(k, v) for k, v in written.items()}


def read_torch_file(
    path: str | Path, layout: str, config: Config, missing: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """A written PyTorch checkpoint read back into the reference's keys, strictly in ``layout``
    with ``config``'s architecture (``layouts.LayoutError`` otherwise) but for the reference
    keys ``missing`` names."""
    state, _ = checkpoints.load_state_dict(path)
    allow = layouts.Allow(missing=tuple(missing))
    detected = layouts.match_layout(state, layout, config.family, allow, config)
    return layouts.to_reference(state, detected)


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


def verify_torch(
    path: Path,
    layout: str,
    source: Source,
    shape: Sequence[int],
    tensors: Tensors | None = None,
    seed: int = 0,
):
    """Read the written checkpoint back through ``checkpoints`` and ``layouts`` into the PyTorch
    reference and compare it layer by layer with the source's port model (a Keras or Flax
    source). A PyTorch source (a layout change) is compared tensor by tensor: bit-identical to
    the source (cast as ``tensors`` casts)."""
    tensors = tensors or Tensors(allow_nonfinite=True)
    back = read_torch_file(path, layout, source.config, source.missing)
    if source.kind == "torch":
        want = {k: tensors(k, v) for k, v in source.reference.items()}
        return _exact_report(f"{path.name} vs {Path(source.path).name}", back, want)
    model = source.model
    if model is None:  # load the Flax / Keras weights source now
        model = _load_port_file(source.kind, source.path, source.config)
    reference = _reference_model(source.config, _completed(back, model, source.kind, source.config))
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
    dtype: str | None = None,
    allow_missing: Sequence[str] = (),
    allow_unused: Sequence[str] = (),
    allow_nonfinite: bool = False,
    progress: Progress | None = None,
) -> tuple[Conversion, Any]:
    """Convert the file at ``source`` (PyTorch checkpoint, Keras ``.keras`` or Flax
    ``.safetensors``) to ``target``: "keras", "flax", or "torch" in ``layout`` (default
    ``default_layout(family)``).

    Each tensor keeps its dtype unless ``dtype`` ("float32", "float16", "bfloat16") casts the
    floating ones. Every output but detectron2's ``.pkl`` is streamed (one tensor in memory at a
    time; ``.pth`` inputs memory-mapped); NaN / Inf anywhere fails the conversion unless
    ``allow_nonfinite``; ``allow_missing`` / ``allow_unused`` are fnmatch patterns of tensors
    deliberately absent (left at initialization, or left out of a PyTorch output) or extra
    (dropped). Failures raise the ``weight_convert.errors`` kinds and leave no output behind.

    Returns the ``Conversion`` summary and the verification ``ParityReport`` (or None).
    """
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    if layout is not None and target != "torch":
        raise LayoutChoiceError(
            f"--layout chooses the PyTorch layout written: use it with --to torch (not {target})"
        )
    tensors = Tensors(dtype, allow_nonfinite)
    progress = progress or Progress(enabled=False)
    paths = output_paths(source, target, output)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"output exists: {', '.join(existing)} (use --force to replace)")
    check_writable(paths)
    times: dict[str, float] = {}

    start = time.perf_counter()
    progress.step(f"reading {source}")
    src = read_source(source, layouts.Allow(tuple(allow_missing), tuple(allow_unused)), variant)
    _check_variant(src, variant)
    if target == "torch":
        layout = _choose_layout(src.family, layout)
    times["read"] = time.perf_counter() - start

    start = time.perf_counter()
    name = src.variant or "custom config"
    if target == "torch":
        progress.step(f"writing {paths[0]} in the {layout} layout ({name})")
        state = layouts.from_reference(
            src.reference, layout, src.family, src.config, missing=src.missing
        )
        write_torch(state, paths[0], layout, src.family, tensors, progress)
        del state
    elif target == "flax":
        progress.step(f"writing {paths[0]} ({name})")
        write_flax(src, paths[0], tensors, progress)
    else:
        progress.step(f"building the keras model ({name}) and writing {paths[0]}")
        write_keras(src, paths, tensors, progress)
    times["write"] = time.perf_counter() - start

    report = None
    if verify:
        start = time.perf_counter()
        shape = tuple(verify_shape or default_verify_shape(src.config))
        if target == "torch":
            against = "the source" if src.kind == "torch" else f"the {src.kind} source"
            progress.step(f"verifying the written checkpoint against {against}")
            report = verify_torch(paths[0], layout, src, shape, tensors)
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
            "missing": list(src.missing),
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

"""Writing a conversion's target, one tensor at a time and atomically: the Keras ``.keras`` +
``.weights.h5``, the Flax ``.safetensors`` or ``.msgpack``, or a PyTorch checkpoint in a chosen
layout (``.safetensors``, ``torch.save``'s ``.pth`` via ``weight_convert.torch_zip``, or a
model-zoo ``.pkl``).

Every value passes through ``Tensors`` as it is written: loaded, cast (``--dtype``), checked for
NaN / Inf, released. Files are written in a staging folder beside the output and published at
the end without replacing what appeared meanwhile (``outputs.atomic``), so a failure leaves
nothing behind.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from weight_convert import layouts, port_files, rules, safetensors_io, transfer
from weight_convert.errors import (
    DtypeOverflowError,
    NonFiniteError,
    ShapeMismatchError,
    UsageError,
)
from weight_convert.outputs import atomic
from weight_convert.progress import Progress
from weight_convert.sources import Source
from weight_convert.tensors import FLOAT_DTYPES, LazyTensor, is_float, release
from weight_convert.torch_zip import write_pth
from zoo.configs import config_to_dict, family_of

__all__ = [
    "Tensors",
    "write_flax",
    "write_keras",
    "write_torch",
]


def _listed(counts: Mapping[str, str]) -> str:
    shown = ", ".join(f"{k} ({v})" for k, v in list(counts.items())[:4])
    return shown + (f" and {len(counts) - 4} more" if len(counts) > 4 else "")


class Tensors:
    """Loads each tensor as it is written: casts floating tensors to ``dtype`` (None: keep each
    tensor's dtype) and checks the result for NaN / Inf. What it finds is collected and raised by
    ``check`` once the pass is over, unless ``allow_nonfinite``: ``NonFiniteError`` for NaN / Inf
    in the source, ``DtypeOverflowError`` for finite values the cast turned into Inf."""

    def __init__(self, dtype: str | None = None, allow_nonfinite: bool = False) -> None:
        if dtype is not None and dtype not in FLOAT_DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}; choose {', '.join(FLOAT_DTYPES)}")
        self.dtype_name = dtype
        self.dtype = None if dtype is None else FLOAT_DTYPES[dtype]
        self.allow_nonfinite = allow_nonfinite
        #: key -> (NaN count, Inf count) in the source
        self.nonfinite: dict[str, tuple[int, int]] = {}
        #: key -> count of finite source values the cast made infinite
        self.overflow: dict[str, int] = {}

    def __call__(self, key: str, value: Any) -> np.ndarray:
        array = value.load() if isinstance(value, LazyTensor) else np.asarray(value)
        if not is_float(array.dtype):
            return array
        written = array
        if self.dtype is not None and array.dtype != self.dtype:
            with np.errstate(over="ignore"):  # overflow is counted below
                written = array.astype(self.dtype)
        if not self.allow_nonfinite:
            self._count(key, array, written)
        return written

    def _count(self, key: str, source: np.ndarray, written: np.ndarray) -> None:
        finite = np.isfinite(written)
        bad = int(finite.size - np.count_nonzero(finite))
        if not bad:
            return
        if written is not source:
            finite = np.isfinite(source)
        nan = int(np.count_nonzero(np.isnan(source)))
        inf = int(finite.size - np.count_nonzero(finite)) - nan
        if nan or inf:
            self.nonfinite[key] = (nan, inf)
        if bad > nan + inf:
            self.overflow[key] = bad - nan - inf

    def out_dtype(self, value: Any) -> np.dtype:
        dtype = np.dtype(value.dtype)
        return self.dtype if self.dtype is not None and is_float(dtype) else dtype

    def check(self) -> None:
        if self.nonfinite:
            counts = {k: f"{nan} NaN, {inf} Inf" for k, (nan, inf) in self.nonfinite.items()}
            raise NonFiniteError(
                f"{len(counts)} tensor(s) hold NaN or Inf: {_listed(counts)} (--allow-nonfinite "
                "converts them anyway)"
            )
        if self.overflow:
            counts = {k: f"{n} value(s)" for k, n in self.overflow.items()}
            top = float(ml_dtypes.finfo(self.dtype).max)
            raise DtypeOverflowError(
                f"--dtype {self.dtype_name}: {len(counts)} tensor(s) hold finite values beyond "
                f"{self.dtype_name}'s range (|x| > {top:g}), which the cast makes Inf: "
                f"{_listed(counts)} (--allow-nonfinite writes them as Inf anyway)"
            )


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


# --------------------------------------------------------------------------- port files


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
        dtype = rules.port_dtype(port_path, value.dtype)
        out[port_path] = (
            key,
            value.map(lambda x, p=port_path: rules.port_tensor(p, x), got, dtype),
        )
    return out


def write_flax(
    source: Source,
    path: Path,
    tensors: Tensors,
    progress: Progress | None = None,
    *,
    replace: bool = False,
) -> None:
    """The Flax ``.safetensors`` file of ``ports.flax.serialization`` (every checkpoint variable
    by nnx path, config in the metadata) or, for a ``.msgpack`` path, the msgpack of the nnx
    state's pure dict (``port_files.write_flax_msgpack``), streamed: the model is built
    abstractly (shapes only) and each tensor is loaded, rearranged and written in turn. Tensors
    ``source.missing`` names come from a freshly initialized model. An existing ``path`` is
    kept (``OutputExistsError``) unless ``replace``."""
    from ports.flax.serialization import FORMAT
    from weight_convert.frameworks import flax_port

    progress = progress or Progress(enabled=False)
    model = flax_port.build_model(source.config, initialize=False)

    def initialized() -> Mapping[str, np.ndarray]:
        return flax_port.read(flax_port.build_model(source.config))

    planned = port_values(source, flax_port.shapes(model), initialized)
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

        atomic([path], write_msgpack, replace=replace)
        return
    metadata = {
        "format": FORMAT,
        "model": family_of(source.config).model,
        "config": json.dumps(config_to_dict(source.config)),
    }
    items = [(name, key, value) for name, (key, value) in planned.items()]
    atomic(
        [path],
        lambda staged: _stream_safetensors(staged[0], items, tensors, metadata, progress),
        replace=replace,
    )


def write_keras(
    source: Source,
    paths: list[Path],
    tensors: Tensors,
    progress: Progress | None = None,
    *,
    replace: bool = False,
) -> None:
    """``OUT.keras`` and ``OUT.weights.h5``, streamed: the Keras model is built without values
    (``keras_port.abstract_model``) and Keras' own saver pulls each variable's value, loaded,
    rearranged and checked just then (``keras_port.save_streamed``). Tensors ``source.missing``
    names come from a freshly initialized model. Both files are published or neither; existing
    ones are kept (``OutputExistsError``) unless ``replace``."""
    from weight_convert.frameworks import keras_port

    progress = progress or Progress(enabled=False)
    model = keras_port.abstract_model(source.config)
    shapes = keras_port.shapes(model)
    planned = port_values(
        source, shapes, lambda: keras_port.read(keras_port.build_model(source.config))
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
            model, staged[1], staged[0], value_of, lambda: keras_port.build_model(source.config)
        )
        if count != len(shapes):
            raise RuntimeError(f"Keras saved {count} of the model's {len(shapes)} variables")
        port_files.write_config_attr(staged[1], source.config)  # a bare .weights.h5 names it
        next(bar, None)
        tensors.check()

    atomic(paths, write, replace=replace)


# --------------------------------------------------------------------------- PyTorch files


def _write_pkl(
    path: Path, state: Mapping[str, Any], tensors: Tensors, progress: Progress, replace: bool
) -> None:
    """A model-zoo pickle ``{"model": {key: ndarray}, "__author__": ..., "matching_heuristics":
    True}`` (all tensors in memory at once)."""

    def write(staged: list[Path]) -> None:
        arrays = {}
        for key, value in progress.track(list(state.items()), "load"):
            arrays[key] = np.require(tensors(key, value), requirements="C")
        tensors.check()
        data = {"model": arrays, "__author__": "weight-convert", "matching_heuristics": True}
        with open(staged[0], "wb") as f:
            pickle.dump(data, f, protocol=4)

    atomic([path], write, replace=replace)


def write_torch(
    state: Mapping[str, Any],
    path: str | Path,
    layout: str,
    family: str,
    tensors: Tensors | None = None,
    progress: Progress | None = None,
    *,
    replace: bool = False,
) -> None:
    """Write a PyTorch checkpoint in ``layout``'s keys (``state``: from
    ``layouts.from_reference``; arrays or ``LazyTensor``s), the format chosen by the suffix of
    ``path``:

    - ``.safetensors``: streamed one tensor at a time (no framework), metadata
      ``{"format": "pt"}``;
    - ``.pth`` / ``.pt`` / ``.bin``: ``torch.save``'s zip of the flat ``{key: tensor}`` dict,
      nested under ``layouts.torch_wrapper(layout, family)`` where that layout's releases nest
      it, streamed too (``torch_zip.write_pth``);
    - ``.pkl``: a model-zoo pickle of NumPy arrays (layouts whose releases are such pickles).

    Atomic (staged, then published; ``outputs.atomic``): an existing ``path`` is kept
    (``OutputExistsError``) unless ``replace``. dtypes are kept unless ``tensors`` casts them.
    """
    path = Path(path)
    tensors = tensors or Tensors(allow_nonfinite=True)
    progress = progress or Progress(enabled=False)
    spec = layouts.layout_spec(layout, family)
    if path.name.endswith(".pkl"):
        if not spec.model_zoo_pickle:
            pickled = [s.name for s in layouts.all_layouts() if s.model_zoo_pickle]
            raise UsageError(
                f"{path.name}: .pkl is {' / '.join(dict.fromkeys(pickled))}'s format; write "
                f"{layout} checkpoints as .pth, .pt, .bin or .safetensors"
            )
        _write_pkl(path, state, tensors, progress, replace)
        return
    items = [(k, k, v) for k, v in state.items()]
    if path.name.endswith(".safetensors"):
        metadata = {"format": "pt"}
        atomic(
            [path],
            lambda staged: _stream_safetensors(staged[0], items, tensors, metadata, progress),
            replace=replace,
        )
        return
    wrapper = spec.wrapper
    atomic(
        [path],
        lambda staged: write_pth(staged[0], items, tensors, wrapper, progress),
        replace=replace,
    )


def write_huggingface(
    state: Mapping[str, Any],
    paths: list[Path],
    config: Mapping[str, Any],
    tensors: Tensors | None = None,
    progress: Progress | None = None,
    *,
    replace: bool = False,
) -> None:
    """A Hugging Face model directory, ``paths`` = [``model.safetensors``, ``config.json``]:
    the state dict (in the Hugging Face layout's keys) streamed as ``save_pretrained`` writes
    it (metadata ``{"format": "pt"}``) and ``config``, both published or neither."""
    from weight_convert.huggingface import config_text

    tensors = tensors or Tensors(allow_nonfinite=True)
    progress = progress or Progress(enabled=False)
    items = [(k, k, v) for k, v in state.items()]

    def write(staged: list[Path]) -> None:
        _stream_safetensors(staged[0], items, tensors, {"format": "pt"}, progress)
        staged[1].write_text(config_text(config))

    atomic(paths, write, replace=replace)

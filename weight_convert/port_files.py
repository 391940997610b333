"""Port files beyond ``.keras`` and the Flax ``.safetensors``, and port models in a chosen dtype.

- Flax ``.msgpack``: the nested pure dict ``flax.serialization.msgpack_serialize(
  nnx.state(model, CHECKPOINT_VARIABLES).to_pure_dict())`` gives, byte for byte. nnx paths
  (``layers.0.blocks.1.attn.qkv.kernel``) nest as dicts; list indices (``nnx.List``) are int
  keys, as ``to_pure_dict`` makes them. A Flax user restores the file with the standard API::

      state = nnx.state(model)  # or nnx.split(abstract_model)
      nnx.replace_by_pure_dict(state, serialization.msgpack_restore(data))
      nnx.update(model, state)  # or nnx.merge(graphdef, state)

  or ``nnx.update(model, serialization.msgpack_restore(data))`` (the state of
  ``nnx.state(model, nnx.Param)`` lacks a model's ``Buffer``s; ``serialization.from_bytes`` wants
  string list indices and does not take the file). msgpack has no metadata
  slot, so the file holds no config: ``infer_port_config`` recovers the architecture from the
  variables' paths and shapes.
- Keras ``.weights.h5`` as input: the model is built from the config and loads the file
  (``read_keras_weights_h5``); ``write_config_attr`` stores the zoo config as an HDF5 attribute
  of the file's root, so a bare ``.weights.h5`` names its architecture (``model.load_weights``
  ignores attributes and accepts the file unchanged).
- dtypes: ``build_keras_model`` builds a Keras model whose variables are float32, float16 or
  bfloat16 (the global dtype policy is set while the model is built); ``load_keras_model``
  loads a ``.keras`` file in the dtype its weights are stored in, or another one;
  ``abstract_flax_model`` gives the abstract Flax model's variables a dtype. Keras stores
  bfloat16 in HDF5 as 2-byte opaque data with the attribute ``dtype="bfloat16"``; ``.keras``
  and ``.weights.h5`` both keep float16 and bfloat16 as they are, tensor by tensor: a file
  mixing them (OpenAI's CLIP: float16 convs and linears, float32 norms and embeddings) is read
  back with each tensor in its dataset's dtype (``load_keras_weights``), while a Keras model
  loaded from it is built in one dtype, the widest (float32), and computes in it.

Arrays are NumPy (bfloat16 as ``ml_dtypes.bfloat16``); values may also be
``weight_convert.tensors.LazyTensor``s, loaded one at a time. Importing this module needs NumPy
only: Flax, Keras and h5py are imported by the functions that use them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from weight_convert import keras_files
from weight_convert.errors import WrongFormatError
from weight_convert.keras_files import CONFIG_ATTR
from zoo.configs import Config, config_to_dict, family_of, model_config

__all__ = [
    "CONFIG_ATTR",
    "abstract_flax_model",
    "build_keras_model",
    "infer_port_config",
    "keras_file_dtype",
    "load_keras_weights",
    "load_keras_model",
    "read_config_attr",
    "read_flax_msgpack",
    "read_keras_weights_h5",
    "shared_float_dtype",
    "write_config_attr",
    "write_flax_msgpack",
]

#: dtypes a port model is built in (``weight_convert.tensors.FLOAT_DTYPES``)
_DTYPES = ("float32", "float16", "bfloat16")


def _check_dtype(dtype: str) -> None:
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose {', '.join(_DTYPES)}")


def shared_float_dtype(dtypes: Iterable[Any]) -> str | None:
    """The name ("float32", "float16" or "bfloat16") of the one floating dtype among
    ``dtypes`` (non-floating ones ignored); None when there are several or another one
    (float64): a model in one dtype cannot hold them as they are."""
    from weight_convert.tensors import FLOAT_DTYPES, is_float

    found = {np.dtype(d) for d in dtypes if is_float(d)}
    names = [name for name, d in FLOAT_DTYPES.items() if d in found]
    return names[0] if len(found) == 1 and names else None


# --------------------------------------------------------------------------- Flax msgpack


def _nest(items: Iterable[tuple[str, Any]]) -> dict:
    """Dotted paths -> nested dicts, digit components as int keys (``nnx.List`` indices: a
    Python attribute never starts with a digit)."""
    tree: dict = {}
    for name, value in items:
        keys = [int(p) if p.isdigit() else p for p in name.split(".")]
        node = tree
        for i, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"{name}: {'.'.join(map(str, keys[: i + 1]))} is a tensor too")
        if keys[-1] in node:
            raise ValueError(f"{name} given twice, or a tensor and a module at once")
        node[keys[-1]] = value
    return tree


def write_flax_msgpack(path: str | os.PathLike, items: Iterable[tuple[str, Any]]) -> None:
    """Write ``(nnx path, array)`` items as the Flax msgpack of their nested pure dict (keys in
    ``nnx.state``'s sorted order, so the bytes equal ``msgpack_serialize(...to_pure_dict())``).

    Arrays keep their dtype (bfloat16 included). Values may be ``LazyTensor``s: the file is
    written one tensor at a time (loaded, serialized, released), so memory holds one tensor.
    Not atomic: write to a staging path (``outputs.atomic``).
    """
    import msgpack
    from flax import serialization

    from weight_convert.tensors import load, release

    tree = _nest(items)
    packer = msgpack.Packer()

    def write(f, node: dict) -> None:
        f.write(packer.pack_map_header(len(node)))
        for key in sorted(node):
            f.write(packer.pack(key))
            value = node[key]
            if isinstance(value, dict):
                write(f, value)
            else:
                f.write(serialization.msgpack_serialize(load(value)))
                release(value)

    with open(os.fspath(path), "wb") as f:
        write(f, tree)


def read_flax_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{nnx path: array}`` of a Flax msgpack file of nested dicts with array leaves (int or
    string list indices alike), arrays in the file's dtypes (read-only views of the file's
    bytes). Raises ``ValueError`` for a leaf that is no array, a key that is no attribute name
    or list index (a string holding ".", a float, bytes...) and a path given twice (``0`` and
    ``"0"``, or a key ``"head.kernel"`` beside ``head: {kernel: ...}``): one of them would
    silently win."""
    from flax import serialization

    path = os.fspath(path)
    with open(path, "rb") as f:
        tree = serialization.msgpack_restore(f.read())
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: holds a {type(tree).__name__}, not a dict of arrays")
    out: dict[str, np.ndarray] = {}
    stack = [(tree, "")]
    while stack:  # no recursion: msgpack nests as deep as the file says
        node, prefix = stack.pop()
        for key, value in node.items():
            name = f"{prefix}{_msgpack_key(path, prefix, key)}"
            if isinstance(value, dict):
                stack.append((value, name + "."))
            elif not isinstance(value, (np.ndarray, np.generic)):
                raise ValueError(f"{path}: {name} is a {type(value).__name__}")
            elif name in out:
                raise ValueError(f"{path}: {name} is given twice (list indices 0 and '0'?)")
            else:
                out[name] = np.asarray(value)
    prefixes = {name[:i] for name in out for i, c in enumerate(name) if c == "."}
    clash = sorted(prefixes & set(out))
    if clash:
        raise ValueError(f"{path}: {clash[0]} is both a tensor and a module")
    return dict(sorted(out.items()))


def _msgpack_key(path: str, prefix: str, key: Any) -> str:
    """One component of an nnx path: an attribute name or a list index (int or digits)."""
    if type(key) is int and key >= 0:
        return str(key)
    if isinstance(key, str) and key and "." not in key:
        return key
    raise ValueError(f"{path}: key {str(key)[:100]!r} under {prefix or 'the root'} is no name")


def infer_port_config(shapes: Mapping[str, tuple[int, ...]]) -> tuple[Config, list[str]]:
    """The architecture of port variables from their paths and shapes alone (``{port path:
    shape}``, Keras or Flax paths): the paths map to the reference's keys (``rules.torch_key``)
    and ``layouts.infer_config`` is tried for every family with layouts; the one whose model
    has exactly these tensors and shapes wins.

    Returns (config, notes). Fields that no tensor shape shows come from the defaults: the
    training resolution, drop rates, head counts no shape holds (a note says so). Raises
    ``layouts.LayoutError`` when no family fits.
    """
    from weight_convert import layouts, rules
    from zoo.configs import reference_shapes

    state: dict[str, np.ndarray] = {}  # zero-strided stand-ins: shapes without data
    for path, shape in shapes.items():
        key = rules.torch_key(path)
        if key in state:
            raise layouts.LayoutError(f"two variables map to {key}, {path} the second")
        state[key] = np.broadcast_to(
            np.zeros((), np.float32), rules.torch_shape(path, tuple(shape))
        )
    want = {k: v.shape for k, v in state.items()}
    tried = []
    for family in layouts.FAMILY_LAYOUTS:
        try:
            config, notes = layouts.infer_config(state, family)
        except layouts.LayoutError as e:
            tried.append(f"{family}: {e}")
            continue
        if reference_shapes(config) == want:
            return config, notes
        tried.append(f"{family}: the inferred model has other tensors or shapes")
    raise layouts.LayoutError(
        f"no model of this zoo has these {len(shapes)} variables ({'; '.join(tried)})"
    )


def abstract_flax_model(config: Config, dtype: str | None = None):
    """``ports.flax.models.abstract_model(config)`` with every floating checkpoint variable
    (``nnx.Param`` and ``Buffer``) declared ``dtype`` (None: as the model makes them,
    float32; ``ports.flax.layers.variables.declare_dtype``): the weight transfer
    (``flax_port.assign``) and ``ports.flax.serialization.load_weights`` cast to it.
    A model holding bfloat16 parameters computes in float32 on float32 input (Flax promotes)
    and in bfloat16 on bfloat16 input."""
    from ports.flax.layers.variables import declare_dtype
    from ports.flax.models import abstract_model
    from weight_convert.tensors import FLOAT_DTYPES

    model = abstract_model(config)
    if dtype is not None:
        _check_dtype(dtype)
        declare_dtype(model, FLOAT_DTYPES[dtype])
    return model


# --------------------------------------------------------------------------- Keras


def write_config_attr(path: str | os.PathLike, config: Config) -> None:
    """Store ``config`` (JSON of ``config_to_dict``) as the root attribute ``CONFIG_ATTR`` of
    the HDF5 file at ``path`` (a ``.weights.h5`` written by ``model.save_weights``)."""
    import h5py

    with h5py.File(os.fspath(path), "a") as f:
        f.attrs[CONFIG_ATTR] = json.dumps(config_to_dict(config))


def read_config_attr(path: str | os.PathLike) -> Config | None:
    """The zoo config ``write_config_attr`` stored in the HDF5 file at ``path``, validated
    (``zoo.configs.config_from_json``); None when the file has none (a ``.weights.h5`` Keras
    wrote alone). Raises ``weight_convert.errors.CheckpointError`` (a ``ValueError``) for an
    unreadable one."""
    path = os.fspath(path)
    with keras_files.open_weights(path, archive=False) as (f, _):
        return keras_files.read_config_attr(f, path)


def keras_file_dtype(path: str | os.PathLike) -> str | None:
    """The one floating dtype ("float32", "float16", "bfloat16") the weights of a Keras
    ``.keras`` or ``.weights.h5`` file are stored in; None when they mix dtypes."""
    path = os.fspath(path)
    with keras_files.open_weights(path, archive=path.lower().endswith(".keras")) as (f, _):
        datasets = keras_files.weights_datasets(f, path).values()
        return shared_float_dtype(keras_files.dataset_dtype(d) for d in datasets)


def build_keras_model(config: Config, dtype: str | None = None):
    """``ports.keras.models.build_model(config)`` with every variable in ``dtype`` ("float32",
    "float16", "bfloat16"; None: the global dtype policy's). The global policy is ``dtype``
    while the model is made and built (a Keras layer takes it when constructed, its variables
    when built; the models pass no dtype to their sublayers) and restored afterwards, also on
    error. The model's own policy is ``dtype`` too, so ``model.save`` records it."""
    import keras

    from ports.keras.models import build_model

    if dtype is None:
        return build_model(config)
    _check_dtype(dtype)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        return build_model(config)
    finally:
        keras.config.set_dtype_policy(previous)


def load_keras_model(path: str | os.PathLike, dtype: str | None = None):
    """The zoo model of a ``.keras`` file with its variables, and its computation, in ``dtype``
    (None: the dtype its weights are stored in, ``keras_file_dtype``; float32 if mixed).

    ``keras.saving.load_model`` alone does not give that: it restores the saved dtype policy
    on the top model only, so a bfloat16 file loads under the default policy as float32
    variables (holding the bfloat16 values exactly) behind a top model that rounds its inputs
    to bfloat16. Here the top model's policy is set to ``dtype`` and, where the variables are
    in another dtype, the model is rebuilt in ``dtype`` (``build_keras_model``) and given the
    loaded values (exact when widening). Raises ``WrongFormatError`` for a model that is not
    one of ``ports.keras.models``.
    """
    import keras

    import ports.keras.models  # noqa: F401  (registers the serializable classes)
    from weight_convert.frameworks import keras_port

    path = os.fspath(path)
    keras_files.check_archive(path)  # a zoo model, its members bounded, before Keras reads it
    want = dtype or keras_file_dtype(path) or "float32"
    _check_dtype(want)
    model = keras.saving.load_model(path, compile=False)
    config = model_config(model)
    if config is None:
        raise WrongFormatError(f"{path} holds a {type(model).__name__}, not a model of this zoo")
    if any(keras.backend.standardize_dtype(v.dtype) != want for v in model.weights):
        rebuilt = build_keras_model(config, want)
        keras_port.assign(rebuilt, keras_port.read(model))
        return rebuilt
    model.dtype_policy = want
    return model


def read_keras_weights_h5(
    path: str | os.PathLike, config: Config | None = None
) -> dict[str, np.ndarray]:
    """``{port path: array}`` (``keras_port.read`` names) of a Keras ``.weights.h5`` or
    ``.keras`` file of a zoo model, arrays in the dtype the file stores (the widest when it mixes
    dtypes: every value exact).

    ``config`` defaults to the one the file names (``config.json``, ``write_config_attr``;
    ``UsageError`` when it has none). The file is checked first, nothing read or built
    (``keras_files.checked_weights``: structure, storage, dtypes, and shapes that are the
    config's model's), then ``load_keras_weights`` builds the model and loads it.
    """
    path = os.fspath(path)
    config, dtype = keras_files.checked_weights(path, config)
    return load_keras_weights(path, config, dtype)


def load_keras_weights(path: str, config: Config, dtype: str) -> dict[str, np.ndarray]:
    """The values of a Keras file that ``keras_files.checked_weights`` passed, each in the
    dtype its dataset is stored in (a file mixing float16 and float32, as OpenAI's CLIP
    weights do, gives both back bit for bit), read through a model built in ``dtype`` (the
    file's widest, ``keras_files.build_dtype``, which holds every value exactly).

    The model is built from ``config`` in ``dtype`` (``keras_port.dtype_scope``: float64 with
    64-bit JAX on that backend), without initial values, and loads the HDF5 that
    ``keras_files.open_weights`` opens (``zoo.compat.keras_load_weights``: a ``.keras``
    member read in place, not through ``zipfile``): the file names no variable (a layer's
    variables are ``vars/0``, ``vars/1``, ... in the order its ``build`` creates them; list
    items are groups named after the layer's class), so only the model can read it. Strict
    both ways: ``load_weights`` raises for a variable the file lacks or of another shape, and a
    file holding more variables than the model (which ``load_weights`` would ignore) is a
    ``ValueError`` here.

    Which dataset fed which variable only Keras' walk over the model knows
    (``zoo.compat.keras_variable_datasets``, the walk its saver and loader take): each value is
    cast back to its dataset's dtype, and must come back from it unchanged (it was widened
    from it), else ``CheckpointError``. The model itself, and so what a Keras model loaded from
    the file computes, stays in ``dtype``."""
    from weight_convert.frameworks import keras_port
    from zoo import compat

    with keras_port.dtype_scope(dtype):
        # no initial values (on JAX each initializer compiles once per shape: seconds)
        model = keras_port.build_model(config, initialize=False)
        with keras_files.open_weights(path, path.lower().endswith(".keras")) as (f, _):
            datasets = keras_files.weights_datasets(f, path)
            if len(datasets) != len(model.weights):
                raise ValueError(
                    f"{path} holds {len(datasets)} variables; the {family_of(config).model} "
                    f"of this config has {len(model.weights)}"
                )
            stored = {name: keras_files.dataset_dtype(d) for name, d in datasets.items()}
            try:
                compat.keras_load_weights(model, f, path)  # a .keras member read in place
            finally:
                compat.keras_settle(model.weights)
        values = keras_port.read(model)
    return _in_stored_dtypes(values, keras_port.variables(model), stored, model, path)


def _in_stored_dtypes(
    values: dict[str, np.ndarray],
    variables: Mapping[str, Any],
    stored: Mapping[str, np.dtype],
    model: Any,
    path: str,
) -> dict[str, np.ndarray]:
    """``values`` (by port path, read from the Keras ``variables`` that loaded the file) with
    each floating one cast back to the dtype of the dataset it was loaded from (``stored``, by
    HDF5 path). A value the cast would change was not widened from that dataset:
    ``CheckpointError`` (the walk and the loader disagree). Without the walk (the compat
    fallback), or for a variable Keras' loader found under another name (its Keras 2.13
    fallback), the value stays in the model's dtype."""
    from weight_convert.errors import CheckpointError
    from weight_convert.tensors import is_float
    from zoo import compat

    where = compat.keras_variable_datasets(model)
    if where is None:
        return values
    out = {}
    for port_path, value in values.items():
        dataset = where.get(variables[port_path].path)
        dtype = stored.get(dataset) if dataset is not None else None
        if dtype is not None and is_float(value.dtype) and is_float(dtype) and value.dtype != dtype:
            narrowed = value.astype(dtype)
            if not np.array_equal(narrowed.astype(value.dtype), value, equal_nan=True):
                raise CheckpointError(
                    f"{path}: variable {port_path} does not hold the {dtype} values of its "
                    f"dataset {dataset}"
                )
            value = narrowed
        out[port_path] = value
    return out

"""keras.applications' VGG weights files, read into PyTorch-shaped tensors named after their
Keras layers (``block1_conv1.weight`` (O, I, 3, 3), ``fc1.weight`` (O, I), ``*.bias``): the
``keras_applications`` layout of ``weight_convert.layouts.vgg`` renames them. Framework-free
(h5py and NumPy; no Keras).

Two files, both HDF5 without this zoo's ``vit_zoo_config`` attribute:

- Keras 3 ``model.save_weights("x.weights.h5")``: ``layers/<auto name>/vars/<i>`` datasets,
  each ``vars`` group naming its layer in the attribute ``name`` (``block1_conv1``), variables
  in build order (kernel, bias).
- the legacy Keras 2 ``.h5`` of the released ``vgg19_weights_tf_dim_ordering_tf_kernels.h5``:
  the root attribute ``layer_names`` lists the layers, each layer group's ``weight_names`` its
  datasets (paths inside the group) in order (kernel, bias), as
  ``keras.src.legacy.saving.legacy_h5_format.load_weights_from_hdf5_group`` reads them.

Checked as ``weight_convert.keras_files`` checks a zoo ``.weights.h5`` (no links, bounded walk,
datasets stored contiguous inside the file, floating dtypes), then every dataset used exactly
once by a layer of a VGG (``block{s}_conv{k}``: a (3, 3, I, O) kernel and an (O,) bias;
``fc1`` / ``fc2`` / ``predictions``: (I, O) and (O,)), shapes before any data. Tensors are read
on ``load()`` (the file reopened, one dataset read), never all at once.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from weight_convert import keras_files
from weight_convert.errors import CheckpointError
from weight_convert.tensors import LazyTensor

__all__ = ["LAYER", "is_keras_applications", "open_state_dict"]

#: the layers of a keras.applications VGG that hold weights
LAYER = re.compile(r"(block\d{1,2}_conv\d{1,2}|fc1|fc2|predictions)$")
_MAX_LAYERS = 1024


def _text(value: Any) -> str:
    return value.decode("utf8", "replace") if isinstance(value, bytes) else str(value)


def _names(obj: Any, attr: str, where: str) -> list[str]:
    """A list-of-names attribute (``layer_names``, ``weight_names``), bounded."""
    if attr not in obj.attrs:
        return []
    shape = obj.attrs.get_id(attr).shape or ()
    count = int(np.prod(shape)) if shape else 1
    if count == 0:  # an empty list (a layer without weights): no storage to size
        return []
    if count > _MAX_LAYERS:
        raise CheckpointError(f"{where}: attribute {attr} lists {count} names")
    value = keras_files._small_attr(obj, attr, where)
    return [_text(v) for v in np.atleast_1d(value)]


def _kind(f: Any) -> str | None:
    """ "legacy" (root ``layer_names``), "keras3" (``layers/*/vars`` with layer names) or None."""
    if keras_files.CONFIG_ATTR in f.attrs:
        return None
    if "layer_names" in f.attrs:
        return "legacy"
    layers = f.get("layers")
    if layers is not None and hasattr(layers, "keys"):
        for name in list(layers)[:_MAX_LAYERS]:
            group = layers.get(name, getlink=True)
            if type(group).__name__ != "HardLink":
                continue
            variables = layers[name].get("vars") if hasattr(layers[name], "get") else None
            if variables is not None and "name" in variables.attrs:
                found = _text(keras_files._small_attr(variables, "name", "layers"))
                if LAYER.match(found):
                    return "keras3"
    return None


def is_keras_applications(path: str | os.PathLike) -> bool:
    """Whether the HDF5 file at ``path`` is a keras.applications-style weights file (no zoo
    config; a legacy ``layer_names`` root, or Keras 3 ``vars`` groups naming VGG layers)."""
    path = os.fspath(path)
    with keras_files.open_weights(path, archive=False) as (f, _):
        return _kind(f) is not None


def _layer_datasets(f: Any, kind: str, where: str) -> list[tuple[str, list[str]]]:
    """(layer name, HDF5 paths of its datasets in order) of every layer holding weights."""
    out: list[tuple[str, list[str]]] = []
    if kind == "legacy":
        for name in _names(f, "layer_names", where):
            if name not in f:
                raise CheckpointError(f"{where}: layer_names lists {name[:100]}, not in the file")
            group = f[name]
            weights = _names(group, "weight_names", where)
            for w in weights:
                if w not in group:
                    raise CheckpointError(f"{where}: {name}'s weight {w[:100]} is not in the file")
            if weights:
                out.append((name, [group[w].name for w in weights]))
        return out
    layers = f["layers"]
    for auto in sorted(layers, key=lambda n: (len(n), n)):
        variables = layers[auto].get("vars")
        if variables is None or not len(variables):
            continue
        name = _text(keras_files._small_attr(variables, "name", where) or auto)
        keys = sorted(variables, key=lambda k: int(k) if k.isdigit() else -1)
        if any(not k.isdigit() for k in keys) or keys != [str(i) for i in range(len(keys))]:
            raise CheckpointError(f"{where}: {variables.name} holds {keys[:4]}, not 0, 1, ...")
        out.append((name, [variables[k].name for k in keys]))
    return out


def _loader(path: str, dataset: str, axes: tuple[int, ...]):
    def load() -> np.ndarray:
        import h5py

        with h5py.File(path, "r") as f:
            return np.ascontiguousarray(np.transpose(f[dataset][()], axes))

    return load


def open_state_dict(path: str | os.PathLike) -> tuple[dict[str, LazyTensor], dict[str, Any]]:
    """``{layer.weight / layer.bias: LazyTensor}`` in PyTorch's shapes (conv (O, I, 3, 3),
    dense (O, I)) of a keras.applications VGG weights file, and what was found
    (``format``: "keras3" or "legacy"). ``CheckpointError`` for anything else."""
    path = os.fspath(path)
    with keras_files.open_weights(path, archive=False) as (f, size):
        kind = _kind(f)
        if kind is None:
            raise CheckpointError(f"{path}: no keras.applications weights file")
        datasets = keras_files.weights_datasets(f, path)
        keras_files._check_storage(datasets, size, path)
        dtypes = keras_files._check_dtypes(datasets, path)
        layers = _layer_datasets(f, kind, path)
        used = [d for _, ds in layers for d in ds]
        if sorted(used) != sorted(datasets):
            odd = sorted(set(datasets) - set(used)) or sorted(d for d in used if used.count(d) > 1)
            raise CheckpointError(
                f"{path}: datasets {odd[:3]} belong to no layer, or to two (a Keras file "
                "lists each once)"
            )
        out: dict[str, LazyTensor] = {}
        for name, ds in layers:
            if not LAYER.match(name) or len(ds) != 2 or name + ".weight" in out:
                raise CheckpointError(
                    f"{path}: layer {name[:100]} with {len(ds)} weights is no layer of a "
                    "keras.applications VGG (block{s}_conv{k}, fc1, fc2, predictions: kernel "
                    "and bias), or is listed twice"
                )
            kernel, bias = (datasets[d] for d in ds)
            conv = name.startswith("block")
            rank = 4 if conv else 2
            ks, bs = tuple(kernel.shape), tuple(bias.shape)
            if len(ks) != rank or (conv and ks[:2] != (3, 3)) or bs != ks[-1:]:
                raise CheckpointError(
                    f"{path}: layer {name}'s kernel {ks} and bias {bs} are no "
                    + ("3x3 conv" if conv else "dense layer")
                )
            axes = (3, 2, 0, 1) if conv else (1, 0)
            dtype = keras_files.dataset_dtype(kernel)
            out[f"{name}.weight"] = LazyTensor(
                tuple(ks[a] for a in axes), dtype, _loader(path, ds[0], axes)
            )
            out[f"{name}.bias"] = LazyTensor(
                bs, keras_files.dataset_dtype(bias), _loader(path, ds[1], (0,))
            )
    info = {"format": f"keras-applications-{kind}", "dtype": keras_files.build_dtype(dtypes)}
    return out, info

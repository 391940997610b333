"""``--verify``: the written file loaded back and compared with its source.

- Keras / Flax outputs (``verify_files``): the port model loaded from the file against the
  PyTorch reference holding the source's weights, layer by layer
  (``weight_convert.parity.compare``), on the family's inputs
  (``zoo.configs.family_of(config).make_inputs``).
- PyTorch outputs (``verify_torch``): the checkpoint read back strictly in its layout
  (``read_torch_file``); against a PyTorch source tensor by tensor, bit-exact
  (``exact_report``); against a Keras / Flax source layer by layer, the reference holding the
  written weights against the source's port model.

Needs torch (the reference) and the port compared; imported only when ``--verify`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weight_convert import checkpoints, layouts, port_files
from weight_convert.sources import Source, port_to_reference
from weight_convert.writers import Tensors
from zoo.configs import Config, family_of, reference_shapes

__all__ = ["exact_report", "read_torch_file", "verify_files", "verify_torch"]


def _load_port_file(kind: str, path: str | Path, config: Config):
    """The Keras / Flax model of a file this tool reads or writes, float32, for ``--verify``."""
    path = str(path)
    if kind == "keras":
        import keras

        import ports.keras.models  # noqa: F401  (registers the serializable classes)

        if path.endswith(".keras"):
            return keras.saving.load_model(path, compile=False)  # nothing to compile
        from ports.keras.models import build_model

        model = build_model(config)
        model.load_weights(path)
        return model
    from ports.flax import serialization

    if not path.endswith(".msgpack"):
        return serialization.load(path)
    from weight_convert.frameworks import flax_port

    model = flax_port.build_model(config, initialize=False)
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

    inputs, formats = family_of(config).make_inputs(config, shape, seed)
    return parity.compare(
        reference,
        model,
        port(framework),
        inputs,
        formats,
        tolerance=parity.MODEL_TOLERANCE,
        name=f"{name}{list(shape)}",
        transfer_weights=False,
    )


def _completed(state: Mapping[str, Any], model, kind: str, config: Config) -> Mapping[str, Any]:
    """``state`` with the reference keys it lacks (``--allow-missing``) taken from the port
    ``model`` (Keras or Flax), so the reference and the port hold the same weights."""
    if len(state) == len(reference_shapes(config)):
        return state
    from weight_convert.frameworks import port

    written, _ = port_to_reference(port(kind).read(model), config)
    return {k: state.get(k, v) for k, v in written.items()}


def verify_files(
    target: str,
    paths: list[Path],
    config: Config,
    reference_state: dict[str, np.ndarray],
    shape: Sequence[int],
    seed: int = 0,
):
    """Load the written Keras / Flax model back and compare it with the PyTorch reference
    holding the source's weights, layer by layer, on the family's inputs with the first of
    ``shape``. Tensors the source lacked (``--allow-missing``) are given to the reference from
    the written model."""
    model = _load_port_file(target, paths[0], config)
    reference = _reference_model(config, _completed(reference_state, model, target, config))
    return _compare(reference, model, target, config, shape, Path(paths[0]).name, seed)


def read_torch_file(
    path: str | Path, layout: str, config: Config, missing: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """A written PyTorch checkpoint read back into the reference's keys, strictly in ``layout``
    with ``config``'s architecture (``layouts.LayoutError`` otherwise) but for the reference
    keys ``missing`` names."""
    state, _ = checkpoints.load_state_dict(path)
    allow = layouts.Allow(missing=tuple(missing))
    detected = layouts.match_layout(  # config: the one written, held to every shape
        state, layout, config.family, allow, config, config_from_file=True
    )
    return layouts.to_reference(state, detected)


def exact_report(name: str, got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]):
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
        return exact_report(f"{path.name} vs {Path(source.path).name}", back, want)
    model = source.model
    if model is None:  # load the Flax / Keras weights source now
        model = _load_port_file(source.kind, source.path, source.config)
    reference = _reference_model(source.config, _completed(back, model, source.kind, source.config))
    return _compare(reference, model, source.kind, source.config, shape, path.name, seed)

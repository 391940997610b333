"""Input checks shared by the models of every framework: wrong rank, channel count, layout or
dtype raise a one-line ``ValueError`` naming the model, what it expects and what it got, before
the framework would fail deep inside a layer.

Framework-free (no NumPy either): the models pass the static shape (``x.shape``; ``None`` for a
size unknown while tracing or building, which is not checked) and the dtype (any framework's
dtype object or its name, see ``dtype_name``). Only Python values are compared, so the checks
run at trace time under ``jax.jit`` / ``nnx.jit`` / ``tf.function`` and add nothing to the graph.

The reference (``framework="torch"``) is channels-first, the ports (``"keras"``, ``"flax"``)
channels-last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "check_image",
    "check_inputs",
    "check_points",
    "dtype_name",
    "is_floating",
    "reference_dtypes",
]

#: framework -> (channels last, how to cast to float32, how to move channels to the right axis
#: for 2 and 3 spatial axes)
_FRAMEWORKS = {
    "torch": (
        False,
        "x.float()",
        {2: "x.permute(0, 3, 1, 2)", 3: "x.permute(0, 4, 1, 2, 3)"},
    ),
    "keras": (
        True,
        'keras.ops.cast(x, "float32")',
        {2: "keras.ops.transpose(x, (0, 2, 3, 1))", 3: "keras.ops.transpose(x, (0, 2, 3, 4, 1))"},
    ),
    "flax": (
        True,
        "x.astype(jnp.float32)",
        {2: "x.transpose(0, 2, 3, 1)", 3: "x.transpose(0, 2, 3, 4, 1)"},
    ),
}
_SPATIAL = {2: ("H", "W"), 3: ("T", "H", "W")}
_KIND = {2: "image", 3: "video clip"}


def dtype_name(dtype: Any) -> str:
    """The plain name ("float32", "uint8", "bfloat16") of a dtype given as a string, a NumPy /
    JAX dtype, a ``torch.dtype`` ("torch.float32") or a ``tf.DType`` ("<dtype: 'float32'>")."""
    text = str(dtype)
    if text.startswith("<dtype: '") and text.endswith("'>"):
        text = text[len("<dtype: '") : -2]
    return text.removeprefix("torch.")


def is_floating(name: str) -> bool:
    """Whether a dtype name is a real floating-point type (float16/32/64, bfloat16, float8_*)."""
    return name.startswith(("float", "bfloat"))


def _dims(shape: Iterable[Any]) -> tuple[Any, ...] | None:
    """The shape as a tuple (sizes may be None); None when even the rank is unknown."""
    try:
        return tuple(shape)
    except ValueError:  # tf.TensorShape of unknown rank
        return None


def _fmt(dims: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def reference_dtypes(module: Any, x: Any) -> dict[str, Any]:
    """``check_image``'s ``param_dtype`` / ``autocast`` for a PyTorch ``module`` called on ``x``
    (torch is imported here only, when a reference model runs)."""
    import torch

    return {
        "param_dtype": next(module.parameters()).dtype,
        "autocast": torch.is_autocast_enabled(x.device.type),
    }


def check_inputs(model: Any, framework: str, *tensors: Any) -> None:
    """The checks ``model``'s family declares (``zoo.family.Family.check``) on its positional
    inputs, in ``framework`` ("torch", "keras", "flax"); every zoo model calls this first. The
    reference's parameter dtype and autocast state are passed on for "torch"."""
    from zoo.registry import FAMILIES, model_family

    reference = reference_dtypes(model, tensors[0]) if framework == "torch" else {}
    FAMILIES[model_family(model)].check(model, framework, *tensors, **reference)


def check_image(
    model: Any,
    shape: Iterable[Any],
    dtype: Any,
    *,
    framework: str,
    channels: int | None = None,
    spatial_rank: int | None = None,
    param_dtype: Any = None,
    autocast: bool = False,
) -> None:
    """Raise ValueError unless ``shape`` / ``dtype`` fit the image (``spatial_rank=2``) or clip
    (3) input of ``model`` in ``framework`` ("torch": (B, channels, [T,] H, W); "keras" / "flax":
    (B, [T,] H, W, channels)).

    Checked: the rank exactly; the channel count (with a hint when the input looks like the other
    layout); a floating dtype (integers and bool are rejected); with ``param_dtype`` (the
    reference passes its parameters' dtype, since torch layers need the input to match), the
    input dtype equals it unless ``autocast`` (torch autocast is on and casts both itself).
    Sizes that are None are not checked. ``model`` is the model (its class names it) or a name.
    """
    if channels is None or spatial_rank is None:
        raise TypeError("check_image needs channels and spatial_rank")
    if not isinstance(model, str):
        model = type(model).__name__
    channels_last, cast, _ = _FRAMEWORKS[framework]
    dims = _dims(shape)
    if dims is None:
        return
    names, kind = _SPATIAL[spatial_rank], _KIND[spatial_rank]
    if channels_last:
        layout = _fmt(("B", *names, channels)) + " channels-last"
    else:
        layout = _fmt(("B", channels, *names)) + " channels-first"
    expected = f"{model} expects a {layout} {kind}"
    _check_rank(expected, dims, spatial_rank)
    _check_channels(expected, dims, channels, spatial_rank, framework)
    name = dtype_name(dtype)
    if not is_floating(name):
        raise ValueError(
            f"{model} expects a floating-point {kind}, got {name}: cast it ({cast}) and normalize "
            "it as in training first"
        )
    if param_dtype is not None and not autocast and dtype_name(param_dtype) != name:
        want = dtype_name(param_dtype)
        raise ValueError(
            f"{model} has {want} parameters but the {kind} is {name}: cast the input "
            f"(x.to(torch.{want})) or the model (model.to(torch.{name}))"
        )


def _check_rank(expected: str, dims: tuple[Any, ...], spatial_rank: int) -> None:
    rank = spatial_rank + 2
    if len(dims) == rank:
        return
    hint = ""
    if len(dims) == rank - 1:
        hint = "; add the batch axis (x[None])"
        if spatial_rank == 3:
            hint = "; a single clip without the batch axis (x[None]), or an image?"
    elif len(dims) == rank + 1 and spatial_rank == 2:
        hint = "; a video clip? this model takes images"
    raise ValueError(f"{expected}, got shape {_fmt(dims)} (rank {len(dims)}, not {rank}){hint}")


def _check_channels(
    expected: str, dims: tuple[Any, ...], channels: int, spatial_rank: int, framework: str
) -> None:
    channels_last, _, move = _FRAMEWORKS[framework]
    got = dims[-1 if channels_last else 1]
    if got is None or got == channels:
        return
    where = "the last axis" if channels_last else "axis 1"
    detail = f"{got} channels on {where}, the model has in_chans={channels}"
    if dims[1 if channels_last else -1] == channels:
        fix = move[spatial_rank]
        if channels_last:
            detail += (
                f"; it looks channels-first: the {framework.capitalize()} port takes "
                f"channels-last ({fix}), only the PyTorch reference is channels-first"
            )
        else:
            detail += (
                f"; it looks channels-last: the reference is channels-first ({fix}), "
                "the Keras / Flax ports take channels-last"
            )
    raise ValueError(f"{expected}, got shape {_fmt(dims)}: {detail}")


def check_points(
    model: str,
    coords_shape: Iterable[Any],
    coords_dtype: Any,
    labels_shape: Iterable[Any],
    labels_dtype: Any,
    *,
    batch: Any,
) -> None:
    """Raise ValueError unless point prompts are point_coords (B, N, 2) of (x, y) pixels, any
    integer or floating dtype, and point_labels (B, N), signed integers or floats (1, 0, -1),
    with B = ``batch`` (the images' batch). Sizes that are None are not checked."""
    coords, labels = _dims(coords_shape), _dims(labels_shape)
    if coords is None or labels is None:
        return
    if len(coords) != 3 or coords[-1] not in (2, None):
        raise ValueError(
            f"{model} expects point_coords of shape (B, N, 2) as (x, y) pixels, got {_fmt(coords)}"
        )
    if len(labels) != 2:
        raise ValueError(f"{model} expects point_labels of shape (B, N), got {_fmt(labels)}")
    for a, b in zip(coords[:2], labels, strict=True):
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"{model}: point_coords {_fmt(coords)} and point_labels {_fmt(labels)} disagree "
                "on (B, N)"
            )
    if batch is not None and coords[0] is not None and coords[0] != batch:
        raise ValueError(
            f"{model}: {batch} images but point prompts for {coords[0]} "
            f"(point_coords {_fmt(coords)}); give each image its own row of points"
        )
    name = dtype_name(coords_dtype)
    if not (is_floating(name) or name.startswith(("int", "uint"))):
        raise ValueError(f"{model} expects point_coords as integers or floats, got {name}")
    name = dtype_name(labels_dtype)
    if not (is_floating(name) or name.startswith("int")):
        raise ValueError(
            f"{model} expects point_labels as signed integers or floats (1 foreground, "
            f"0 background, -1 padding), got {name}"
        )

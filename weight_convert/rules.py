"""Layout rules between PyTorch state-dict tensors and port variables. Framework-free.

A port variable is named by its dotted path in the port's module tree with the port's leaf name
(``attn.qkv.kernel``, ``norm1.gamma`` in Keras, ``norm1.scale`` in Flax). Because the ports keep
the reference's attribute names, the PyTorch key is that path with the leaf renamed
(``attn.qkv.weight``) and the tensor is rearranged by the leaf's rule. This table is the only
place that knows about kernels, norms and their layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from weight_convert.errors import DtypeOverflowError, ShapeMismatchError

__all__ = [
    "LEAF_RULES",
    "LeafRule",
    "port_dtype",
    "port_shape",
    "port_tensor",
    "torch_dtype",
    "torch_key",
    "torch_shape",
    "torch_tensor",
]


def _kernel_perm(ndim: int) -> tuple[int, ...]:
    """torch (out, in, *k) -> port (*k, in, out); covers Linear (ndim 2) and Conv1d/2d/3d."""
    return (*range(2, ndim), 1, 0)


def _transpose_kernel_perm(ndim: int) -> tuple[int, ...]:
    """torch ConvTranspose (in, out, *k) -> port (*k, in, out)."""
    return (*range(2, ndim), 0, 1)


@dataclass(frozen=True)
class LeafRule:
    """How one port leaf name corresponds to a PyTorch parameter name and layout: the PyTorch
    leaf name and, for kernels, the axis permutation torch -> port (by the tensor's rank); for
    integers a port cannot hold as PyTorch does (int64 counters: JAX has no int64 without x64),
    the two dtypes: values move between them exactly, refused where the port's cannot hold
    them (``DtypeOverflowError``)."""

    torch_leaf: str
    perm: Callable[[int], tuple[int, ...]] | None = None
    integer: tuple[str, str] | None = None  # (torch dtype, port dtype)

    def dtype(self, dtype: np.dtype, toward_port: bool) -> np.dtype:
        """The dtype ``port_tensor`` (``toward_port``) / ``torch_tensor`` gives a tensor of
        ``dtype``."""
        if self.integer is None:
            return np.dtype(dtype)
        return np.dtype(self.integer[1] if toward_port else self.integer[0])

    def _cast(self, x: np.ndarray, toward_port: bool) -> np.ndarray:
        if self.integer is None:
            return x
        if not np.issubdtype(x.dtype, np.integer):
            raise ShapeMismatchError(f"an integer counter, got dtype {x.dtype}")
        target = self.dtype(x.dtype, toward_port)
        info = np.iinfo(target)
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise DtypeOverflowError(
                f"values up to {x.max()} do not fit the {'port' if toward_port else 'PyTorch'} "
                f"dtype {target}"
            )
        return x.astype(target)

    def _axes(self, ndim: int, toward_port: bool) -> tuple[int, ...] | None:
        """The axis order for a tensor of rank ``ndim`` (None: kept); a kernel below rank 2
        (no in and out axes) is ``ShapeMismatchError`` for the caller to name."""
        if self.perm is None:
            return None
        if ndim < 2:
            raise ShapeMismatchError(
                f"a kernel of rank {ndim}: it needs an input and an output axis"
            )
        perm = self.perm(ndim)
        return perm if toward_port else tuple(int(i) for i in np.argsort(perm))

    def port_tensor(self, x: np.ndarray) -> np.ndarray:
        """The PyTorch tensor ``x`` in the port's layout."""
        axes = self._axes(x.ndim, toward_port=True)
        x = self._cast(x, toward_port=True)
        return x if axes is None else np.ascontiguousarray(np.transpose(x, axes))

    def torch_tensor(self, x: np.ndarray) -> np.ndarray:
        """The port value ``x`` in PyTorch's layout."""
        axes = self._axes(x.ndim, toward_port=False)
        x = self._cast(x, toward_port=False)
        return x if axes is None else np.ascontiguousarray(np.transpose(x, axes))

    def shape(self, shape: tuple[int, ...], toward_port: bool) -> tuple[int, ...]:
        """The shape ``port_tensor`` (``toward_port``) / ``torch_tensor`` gives a tensor of
        ``shape`` (no data needed)."""
        axes = self._axes(len(shape), toward_port)
        return tuple(shape) if axes is None else tuple(shape[i] for i in axes)


#: Port leaf name -> rule. Leaves not listed (bias tables, rel_pos_h, pos_embed, ...) keep their
#: name and are copied as they are.
LEAF_RULES: dict[str, LeafRule] = {
    "kernel": LeafRule("weight", _kernel_perm),  # Dense / Linear / Conv
    # ConvTranspose (the ports' ConvTranspose2d layers name their kernel so)
    "transpose_kernel": LeafRule("weight", _transpose_kernel_perm),
    "gamma": LeafRule("weight"),  # Keras LayerNormalization
    "scale": LeafRule("weight"),  # Flax LayerNorm
    "beta": LeafRule("bias"),  # Keras LayerNormalization
    # a parameter the reference names ``gamma`` that is no norm weight (DF-GAN's residual scale
    # ``D_Block.gamma``): the ports name it so, as ``gamma`` above is the norm's ``weight``
    "residual_gamma": LeafRule("gamma"),
    "embedding": LeafRule("weight"),  # Embedding tables
    # BatchNorm2d: Keras keeps its own names (gamma / beta above); Flax keeps PyTorch's
    # running_mean / running_var (nnx's mean / var are too generic to rename here)
    "moving_mean": LeafRule("running_mean"),
    "moving_variance": LeafRule("running_var"),
    # PyTorch's int64 counter is int32 in the ports (every backend; JAX has no int64 without x64)
    "num_batches_tracked": LeafRule("num_batches_tracked", integer=("int64", "int32")),
}

_IDENTITY = LeafRule("")


def _rule(port_path: str) -> tuple[str, LeafRule]:
    parent, _, leaf = port_path.rpartition(".")
    rule = LEAF_RULES.get(leaf, _IDENTITY)
    torch_leaf = rule.torch_leaf or leaf
    return (f"{parent}.{torch_leaf}" if parent else torch_leaf), rule


def torch_key(port_path: str) -> str:
    """``attn.qkv.kernel`` -> ``attn.qkv.weight``."""
    return _rule(port_path)[0]


def _named(port_path: str, fn: Callable[[LeafRule], Any]) -> Any:
    """``fn(rule)`` of the path's rule; its ``ShapeMismatchError`` / ``DtypeOverflowError``
    names the path."""
    try:
        return fn(_rule(port_path)[1])
    except (ShapeMismatchError, DtypeOverflowError) as e:
        raise type(e)(f"{port_path}: {e}") from None


def port_tensor(port_path: str, tensor: np.ndarray) -> np.ndarray:
    """The PyTorch tensor for ``port_path`` rearranged into the port's layout."""
    return _named(port_path, lambda rule: rule.port_tensor(tensor))


def torch_tensor(port_path: str, value: np.ndarray) -> np.ndarray:
    """The port value at ``port_path`` rearranged into the PyTorch layout."""
    return _named(port_path, lambda rule: rule.torch_tensor(value))


def port_dtype(port_path: str, torch_dtype: np.dtype) -> np.dtype:
    """The port variable's dtype for a PyTorch tensor of ``torch_dtype`` (the same but for the
    integer counters of ``LeafRule.integer``)."""
    return _rule(port_path)[1].dtype(torch_dtype, toward_port=True)


def torch_dtype(port_path: str, port_dtype: np.dtype) -> np.dtype:
    """The PyTorch tensor's dtype for the port variable at ``port_path`` of ``port_dtype``."""
    return _rule(port_path)[1].dtype(port_dtype, toward_port=False)


def port_shape(port_path: str, torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The port variable's shape for a PyTorch tensor of ``torch_shape``."""
    return _named(port_path, lambda rule: rule.shape(torch_shape, toward_port=True))


def torch_shape(port_path: str, port_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch tensor's shape for the port variable at ``port_path`` of ``port_shape``."""
    return _named(port_path, lambda rule: rule.shape(port_shape, toward_port=False))

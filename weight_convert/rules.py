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

import numpy as np

__all__ = ["LeafRule", "RULES", "torch_key", "to_port", "to_torch"]


def _kernel_perm(ndim: int) -> tuple[int, ...]:
    """torch (out, in, *k) -> port (*k, in, out); covers Linear (ndim 2) and Conv1d/2d/3d."""
    return tuple(range(2, ndim)) + (1, 0)


def _kernel_to_port(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, _kernel_perm(w.ndim)))


def _kernel_to_torch(k: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(k, np.argsort(_kernel_perm(k.ndim))))


def _transpose_kernel_to_port(w: np.ndarray) -> np.ndarray:
    """torch ConvTranspose (in, out, *k) -> port (*k, in, out)."""
    return np.ascontiguousarray(np.transpose(w, (*range(2, w.ndim), 0, 1)))


def _transpose_kernel_to_torch(k: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(k, (k.ndim - 2, k.ndim - 1, *range(k.ndim - 2))))


def _same(x: np.ndarray) -> np.ndarray:
    return x


@dataclass(frozen=True)
class LeafRule:
    """How one port leaf name corresponds to a PyTorch parameter name and layout."""

    torch_leaf: str
    to_port: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


#: Port leaf name -> rule. Leaves not listed (bias tables, rel_pos_h, pos_embed, ...) keep their
#: name and are copied as they are.
RULES: dict[str, LeafRule] = {
    "kernel": LeafRule("weight", _kernel_to_port, _kernel_to_torch),  # Dense / Linear / Conv
    # ConvTranspose (the ports' ConvTranspose2d layers name their kernel so)
    "transpose_kernel": LeafRule("weight", _transpose_kernel_to_port, _transpose_kernel_to_torch),
    "gamma": LeafRule("weight", _same, _same),  # Keras LayerNormalization
    "scale": LeafRule("weight", _same, _same),  # Flax LayerNorm
    "beta": LeafRule("bias", _same, _same),  # Keras LayerNormalization
    "embedding": LeafRule("weight", _same, _same),  # Embedding tables
}

_IDENTITY = LeafRule("", _same, _same)


def _rule(port_path: str) -> tuple[str, LeafRule]:
    parent, _, leaf = port_path.rpartition(".")
    rule = RULES.get(leaf, _IDENTITY)
    torch_leaf = rule.torch_leaf or leaf
    return (f"{parent}.{torch_leaf}" if parent else torch_leaf), rule


def torch_key(port_path: str) -> str:
    """``attn.qkv.kernel`` -> ``attn.qkv.weight``."""
    return _rule(port_path)[0]


def to_port(port_path: str, tensor: np.ndarray) -> np.ndarray:
    """The PyTorch tensor for ``port_path`` rearranged into the port's layout."""
    return _rule(port_path)[1].to_port(tensor)


def to_torch(port_path: str, value: np.ndarray) -> np.ndarray:
    """The port value at ``port_path`` rearranged into the PyTorch layout."""
    return _rule(port_path)[1].to_torch(value)

"""Helpers for the families' state-dict key/shape tables (``Family.shapes``): the reference
model's keys and shapes computed from a config with no framework. The converter checks
checkpoints against these tables (a JAX user converting a ``.safetensors`` file never imports
torch) and ``zoo.configs.parameter_count`` sums them; each family's test pins its table to the
reference model's own ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Collection

from zoo.family import Shapes

__all__ = ["Shapes", "batchnorm", "conv", "conv_transpose", "linear", "norm", "vit_blocks"]


def linear(out: Shapes, key: str, i: int, o: int, bias: bool = True) -> None:
    """``nn.Linear(i, o)``."""
    out[key + ".weight"] = (o, i)
    if bias:
        out[key + ".bias"] = (o,)


def norm(out: Shapes, key: str, dim: int) -> None:
    """A norm with ``weight`` and ``bias`` of ``dim``."""
    out[key + ".weight"] = out[key + ".bias"] = (dim,)


def batchnorm(out: Shapes, key: str, dim: int) -> None:
    """``nn.BatchNorm2d(dim)``: weight, bias, running_mean, running_var and the scalar
    num_batches_tracked, in ``state_dict()`` order."""
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        out[f"{key}.{leaf}"] = (dim,)
    out[key + ".num_batches_tracked"] = ()


def conv(
    out: Shapes, key: str, i: int, o: int, k: int | tuple[int, ...], bias: bool = True
) -> None:
    """``nn.Conv2d(i, o, k)`` (a tuple ``k`` gives any rank)."""
    kernel = (k, k) if isinstance(k, int) else tuple(k)
    out[key + ".weight"] = (o, i, *kernel)
    if bias:
        out[key + ".bias"] = (o,)


def conv_transpose(out: Shapes, key: str, i: int, o: int, k: int) -> None:
    """``nn.ConvTranspose2d(i, o, k)``."""
    out[key + ".weight"] = (i, o, k, k)
    out[key + ".bias"] = (o,)


def vit_blocks(
    out: Shapes,
    p: str,
    dim: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
    qkv_bias: bool,
    rel_pos: int | None,
    window: int,
    global_blocks: Collection[int],
    mlp: tuple[str, str],
) -> None:
    """ViTDet blocks (SAM's image encoder, detectron2's ViT) under ``{p}blocks.{j}``;
    ``rel_pos`` is the global token grid (None: no relative positions), ``mlp`` the MLP's two
    Linear names."""
    hidden, head_dim = int(dim * mlp_ratio), dim // heads
    for j in range(depth):
        b = f"{p}blocks.{j}."
        norm(out, b + "norm1", dim)
        if rel_pos is not None:
            size = rel_pos if j in global_blocks or window == 0 else window
            out[b + "attn.rel_pos_h"] = out[b + "attn.rel_pos_w"] = (2 * size - 1, head_dim)
        linear(out, b + "attn.qkv", dim, 3 * dim, qkv_bias)
        linear(out, b + "attn.proj", dim, dim)
        norm(out, b + "norm2", dim)
        linear(out, b + f"mlp.{mlp[0]}", dim, hidden)
        linear(out, b + f"mlp.{mlp[1]}", hidden, dim)

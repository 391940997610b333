"""Adapter for the PyTorch reference: state dicts as numpy, hooks, random weights, layouts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import zoo.layers
from zoo.blocks import Ref
from zoo.tensor_format import Format

NAME = "torch"


def resolve_refs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``Ref`` arguments by the reference's factories."""
    return {k: getattr(zoo.layers, v.name) if isinstance(v, Ref) else v for k, v in kwargs.items()}


def build(block: str, kwargs: Mapping[str, Any]) -> nn.Module:
    return getattr(zoo.layers, block)(**resolve_refs(kwargs)).eval()


#: torch.nn layers whose output is channels-first (public classes)
_CHANNELS_FIRST = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def output_format(module: nn.Module) -> Format:
    """Format of a reference module's output: conv outputs and modules that declare
    ``output_format = Format.CHANNELS_FIRST`` are channels-first; everything else is
    channels-last."""
    if isinstance(module, _CHANNELS_FIRST):
        return Format.CHANNELS_FIRST
    return Format(getattr(module, "output_format", Format.CHANNELS_LAST))


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter random values (no zero tables, no unit norms): matrices and kernels
    ~ N(0, 1 / fan_in), norm weights ~ 1 + N(0, 0.5^2), everything else ~ N(0, 0.5^2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("weight") and p.ndim >= 2:
                p.copy_(noise / np.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.5 * noise)
            else:
                p.copy_(0.5 * noise)
    return module


def state_dict(module: nn.Module) -> dict[str, np.ndarray]:
    """Persistent state (what a checkpoint holds) as numpy arrays."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_state_dict(module: nn.Module, values: Mapping[str, np.ndarray]) -> None:
    """Strict load of numpy arrays."""
    from weight_convert.tensors import load, to_torch

    module.load_state_dict({k: to_torch(load(v)) for k, v in values.items()})


def create(name: str, **overrides) -> nn.Module:
    """A registered model variant (``zoo.configs.VARIANTS``) in eval mode."""
    from zoo.models import create_model

    return create_model(name, **overrides)


def call(module: nn.Module, inputs: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Run in inference mode; a model returning several tensors gives a list."""
    with torch.no_grad():
        out = module(*[torch.from_numpy(x) for x in inputs])
    if isinstance(out, (list, tuple)):
        return [t.detach().numpy() for t in out]
    return out.detach().numpy()


@contextlib.contextmanager
def capture(module: nn.Module) -> Iterator[list[tuple[str, Format, np.ndarray]]]:
    """Record (path, layout, output) of every submodule call, in the order calls finish."""
    records: list[tuple[str, Format, np.ndarray]] = []
    handles = []
    for path, sub in module.named_modules():
        if not path:
            continue

        lay = output_format(sub)

        def hook(_mod, _args, out, path=path, lay=lay):
            if isinstance(out, torch.Tensor):
                records.append((path, lay, out.detach().cpu().numpy().copy()))

        handles.append(sub.register_forward_hook(hook))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def settings() -> dict[str, str]:
    return {
        "torch": torch.version.__version__,
        "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torch.allow_tf32": str(torch.backends.cuda.matmul.allow_tf32),
    }


@contextlib.contextmanager
def numerics() -> Iterator[None]:
    """Full fp32 matmuls for the duration (no TF32 on GPUs)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)

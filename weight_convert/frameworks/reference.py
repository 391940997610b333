"""Adapter for the PyTorch reference: state dicts as numpy, hooks, random weights, formats."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import zoo.layers
from weight_convert.frameworks.recorder import Recorder
from weight_convert.frameworks.sites import collect_sites
from weight_convert.tensors import from_torch
from weight_convert.tolerance import MIXED_BFLOAT16
from zoo.blocks import Ref
from zoo.tensor_format import Format

NAME = "torch"


def resolve_refs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``Ref`` arguments by the reference's factories."""
    return {k: getattr(zoo.layers, v.name) if isinstance(v, Ref) else v for k, v in kwargs.items()}


def build(block: str, kwargs: Mapping[str, Any]) -> nn.Module:
    return getattr(zoo.layers, block)(**resolve_refs(kwargs)).eval()


def in_dtype(module: nn.Module, dtype: str | None) -> nn.Module:
    """``module`` with its floating parameters and buffers in ``dtype`` (None: as it is;
    ``"mixed_bfloat16"``: as it is, float32 parameters, see ``autocast``)."""
    if dtype is None or dtype == MIXED_BFLOAT16:
        return module
    return module.to(getattr(torch, dtype))


@contextlib.contextmanager
def dtype_scope(dtype: str | None) -> Iterator[None]:
    """The reference needs no scope for a dtype (float64 is ``in_dtype``; mixed precision is
    ``autocast``, entered around the runs it applies to): for the runners' uniformity."""
    del dtype
    yield


def autocast(dtype: str | None = MIXED_BFLOAT16):
    """``torch.autocast("cpu", dtype=torch.bfloat16)`` for ``"mixed_bfloat16"`` (float32
    parameters; matmuls, convolutions and ``scaled_dot_product_attention`` in bfloat16, by
    autocast's CPU op lists), nothing otherwise."""
    if dtype != MIXED_BFLOAT16:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


#: public torch.nn classes whose output is channels-first (N, C, *spatial) whatever the input
CHANNELS_FIRST_CLASSES: tuple[type[nn.Module], ...] = (
    *(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
    *(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm),
    *(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
    *(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d),
    *(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
    *(nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
    *(nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle),
)


def declared_format(module: nn.Module) -> Format | None:
    """The format a reference module declares for its output: its ``output_format`` attribute,
    else channels-first for the conv, norm and pooling classes of ``CHANNELS_FIRST_CLASSES``,
    else None (undeclared: the parity harness takes the format under which the port's output
    fits, ``weight_convert.parity.formats``)."""
    declared = getattr(module, "output_format", None)
    if declared is not None:
        return Format(declared)
    if isinstance(module, CHANNELS_FIRST_CLASSES):
        return Format.CHANNELS_FIRST
    return None


def declared_formats(module: nn.Module) -> dict[str, Format | None]:
    """``declared_format`` of every submodule, by path (the root is ``""``)."""
    return {path: declared_format(sub) for path, sub in module.named_modules()}


def output_format(module: nn.Module) -> Format:
    """``declared_format``, channels-last where nothing is declared."""
    return declared_format(module) or Format.CHANNELS_LAST


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter random values (no zero tables, no unit norms): matrices and kernels
    ~ N(0, 1 / fan_in), norm weights ~ 1 + N(0, 0.5^2), everything else ~ N(0, 0.5^2); and
    BatchNorm's running statistics too: ``running_mean`` ~ N(0, 0.5^2), ``running_var`` ~
    U(0.5, 2), ``num_batches_tracked`` ~ U{0, ..., 999} (other buffers are left as they are:
    derived tables and official constants)."""
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
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats:
                shape = sub.running_mean.shape
                sub.running_mean.copy_(0.5 * torch.randn(shape, generator=gen))
                sub.running_var.copy_(0.5 + 1.5 * torch.rand(shape, generator=gen))
                sub.num_batches_tracked.fill_(int(torch.randint(1000, (), generator=gen)))
    return module


def state_dict(module: nn.Module) -> dict[str, np.ndarray]:
    """Persistent state (what a checkpoint holds) as numpy arrays, copies: a view of the
    parameters' memory would change under an optimizer step, and JAX on CPU may keep using the
    array it was given (a port would move with the reference)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_state_dict(module: nn.Module, values: Mapping[str, np.ndarray]) -> None:
    """Strict load of numpy arrays."""
    from weight_convert.tensors import as_torch_tensor, load

    module.load_state_dict({k: as_torch_tensor(load(v)) for k, v in values.items()})


def build_model(config) -> nn.Module:
    """The reference model ``config`` describes (any family), in eval mode."""
    from zoo.models import build_model

    return build_model(config)


@contextlib.contextmanager
def mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """``module`` in training mode (dropout, attention dropout and drop path active) or
    inference mode for the duration; its mode is restored after."""
    was = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was)


def stochastic_sites(module: nn.Module) -> dict[str, tuple[str, float]]:
    """Every active stochastic site (``nn.Dropout``, ``DropPath``, attention dropout) by path:
    (kind, rate); see ``weight_convert.frameworks.sites``."""
    return collect_sites(module.named_modules(), nn.Dropout, "p", zoo.layers.DropPath)


def call(
    module: nn.Module,
    inputs: list[np.ndarray],
    *,
    training: bool = False,
    recorder: Recorder | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Run without autograd, in inference mode unless ``training``; a model returning several
    tensors gives a list. ``recorder`` (from ``capture(module)``) gets every submodule's output
    of this call."""
    recording = recorder.running() if recorder is not None else contextlib.nullcontext()
    with torch.no_grad(), mode(module, training), recording:
        out = module(*[torch.from_numpy(x) for x in inputs])
    if isinstance(out, (list, tuple)):
        return [from_torch(t).copy() for t in out]
    return from_torch(out).copy()


def gradients(
    module: nn.Module,
    inputs: list[np.ndarray],
    cotangent: Callable[[int, tuple], np.ndarray],
    *,
    training: bool = False,
) -> tuple[list[np.ndarray | None], dict[str, np.ndarray]]:
    """Gradients of ``sum_i <output_i, cotangent(i, shape of output i)>`` (autograd, in
    inference mode unless ``training``) with respect to each floating input (None for integer
    inputs) and to every parameter, by its ``named_parameters`` name (zeros for one the loss
    does not reach)."""
    xs = [torch.tensor(x, requires_grad=np.issubdtype(x.dtype, np.floating)) for x in inputs]
    module.zero_grad(set_to_none=True)
    with torch.enable_grad(), mode(module, training):
        _loss(module(*xs), cotangent).backward()
    grads = {
        name: np.zeros(tuple(p.shape), _numpy_dtype(p)) if p.grad is None else p.grad.numpy()
        for name, p in module.named_parameters()
    }
    module.zero_grad(set_to_none=True)
    return [x.grad.numpy() if x.grad is not None else None for x in xs], grads


def _loss(out: Any, cotangent: Callable[[int, tuple], np.ndarray]) -> torch.Tensor:
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(
        (o * torch.from_numpy(cotangent(i, tuple(o.shape)))).sum() for i, o in enumerate(outs)
    )


def optimizer_steps(
    module: nn.Module,
    inputs: list[np.ndarray],
    cotangent: Callable[[int, tuple], np.ndarray],
    spec,
    steps: int,
) -> list[dict[str, np.ndarray]]:
    """``steps`` steps of ``zoo.training.torch_optimizer(spec)`` on the loss of ``gradients``
    (the same inputs every step, the module's current mode); every parameter by its
    ``named_parameters`` name after each step."""
    from zoo.training import torch_optimizer

    optimizer = torch_optimizer(spec, module.parameters())
    xs = [torch.from_numpy(x) for x in inputs]
    after = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            _loss(module(*xs), cotangent).backward()
        optimizer.step()
        after.append({n: p.detach().numpy().copy() for n, p in module.named_parameters()})
    optimizer.zero_grad(set_to_none=True)
    return after


def _numpy_dtype(tensor: torch.Tensor) -> np.dtype:
    return torch.empty(0, dtype=tensor.dtype).numpy().dtype


@contextlib.contextmanager
def capture(module: nn.Module) -> Iterator[Recorder]:
    """Forward hooks on every submodule for the duration; yields the ``Recorder`` that
    ``call(module, inputs, recorder=...)`` fills with (path, output) of each submodule call, in
    the order calls finish (``declared_formats`` says each one's format). ``nn.Sequential``
    containers are not recorded: their output is their last item's."""
    recorder = Recorder()
    handles = []
    for path, sub in module.named_modules():
        # an nn.Sequential has no computation of its own: its output is its last item's, which
        # is recorded (a port may run the items from a list, with no layer of that name)
        if not path or isinstance(sub, nn.Sequential):
            continue

        def hook(_mod, _args, out, path=path):
            if isinstance(out, torch.Tensor):
                recorder.add(path, from_torch(out.cpu()).copy())

        handles.append(sub.register_forward_hook(hook))
    try:
        yield recorder
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

"""Pooling arguments, framework-free: what ``nn.MaxPool2d``'s arguments mean for the ports."""

from __future__ import annotations

__all__ = ["pool_arguments", "pooled_size"]


def pool_arguments(
    kernel_size: int, stride: int | None, padding: int, ceil_mode: bool, dilation: int
) -> tuple[int, int, int]:
    """(kernel, stride, padding) of ``nn.MaxPool2d``'s arguments (stride None: the kernel);
    ValueError for what the ports do not implement (ceil mode, dilation, non-square windows)
    and for the padding PyTorch refuses (above half the window)."""
    if ceil_mode or dilation != 1:
        raise ValueError("MaxPool2d: ceil_mode and dilation are not implemented (floor mode only)")
    if not isinstance(kernel_size, int) or not isinstance(padding, int):
        raise ValueError("MaxPool2d: square windows only (int kernel_size and padding)")
    stride = kernel_size if stride is None else stride
    if 2 * padding > kernel_size:
        raise ValueError(
            f"MaxPool2d: padding {padding} should be at most half of kernel_size {kernel_size}"
        )
    return kernel_size, stride, padding


def pooled_size(size: int | None, kernel: int, stride: int, padding: int) -> int | None:
    """Floor mode's output side: ``(size + 2 * padding - kernel) // stride + 1``."""
    return None if size is None else (size + 2 * padding - kernel) // stride + 1

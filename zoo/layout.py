"""The one place where tensor layouts meet.

The PyTorch reference follows the official code: images and conv feature maps are channels-first
(N, C, *spatial); token maps inside Swin / ViTDet blocks are channels-last (N, *spatial, C) there
too. The Keras and Flax ports are channels-last everywhere. Moving a tensor across that boundary
goes through these two functions and nothing else.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Layout", "to_port", "to_reference"]


class Layout(str, enum.Enum):
    """Layout of a reference tensor. Port tensors are always ``CHANNELS_LAST`` (or tokens)."""

    CHANNELS_FIRST = "channels_first"  # (N, C, *spatial): images, conv outputs, LayerNorm2d
    CHANNELS_LAST = "channels_last"  # (N, *spatial, C) or tokens (N, L, C): same in every port


def to_port(x: np.ndarray, layout: Layout | str) -> np.ndarray:
    """A reference tensor in the layout the ports use."""
    if Layout(layout) is Layout.CHANNELS_FIRST and x.ndim > 2:
        return np.moveaxis(x, 1, -1)
    return x


def to_reference(x: np.ndarray, layout: Layout | str) -> np.ndarray:
    """A port tensor in the layout the reference uses."""
    if Layout(layout) is Layout.CHANNELS_FIRST and x.ndim > 2:
        return np.moveaxis(x, -1, 1)
    return x

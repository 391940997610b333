"""The one place where tensor formats meet (channels-first vs channels-last; timm calls this
``Format``). Not to be confused with a checkpoint *layout* (``weight_convert.layouts``: how one
code base names the tensors).

The PyTorch reference follows the official code: images and conv feature maps are channels-first
(N, C, *spatial); token maps inside Swin / ViTDet blocks are channels-last (N, *spatial, C) there
too. The Keras and Flax ports are channels-last everywhere. Moving a tensor across that boundary
goes through these two functions and nothing else.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Format", "to_port_format", "to_reference_format"]


class Format(str, enum.Enum):
    """Format of a reference tensor. Port tensors are always ``CHANNELS_LAST`` (or tokens)."""

    CHANNELS_FIRST = "channels_first"  # (N, C, *spatial): images, conv outputs, LayerNorm2d
    CHANNELS_LAST = "channels_last"  # (N, *spatial, C) or tokens (N, L, C): same in every port
    #: (C, *spatial) with no batch axis (SAM's dense positional grid); (*spatial, C) in the ports
    CHANNELS_FIRST_UNBATCHED = "channels_first_unbatched"


def to_port_format(x: np.ndarray, fmt: Format | str) -> np.ndarray:
    """A reference tensor in the format the ports use (channels-last)."""
    fmt = Format(fmt)
    if fmt is Format.CHANNELS_FIRST and x.ndim > 2:
        return np.moveaxis(x, 1, -1)
    if fmt is Format.CHANNELS_FIRST_UNBATCHED and x.ndim > 1:
        return np.moveaxis(x, 0, -1)
    return x


def to_reference_format(x: np.ndarray, fmt: Format | str) -> np.ndarray:
    """A port tensor in the reference's format ``fmt``."""
    fmt = Format(fmt)
    if fmt is Format.CHANNELS_FIRST and x.ndim > 2:
        return np.moveaxis(x, -1, 1)
    if fmt is Format.CHANNELS_FIRST_UNBATCHED and x.ndim > 1:
        return np.moveaxis(x, -1, 0)
    return x

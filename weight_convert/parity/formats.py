"""Which format to compare a reference tensor in. Framework-free.

A reference module's output is channels-first or channels-last (``zoo.tensor_format.Format``);
the ports are channels-last everywhere. A module that declares its format (an ``output_format``
attribute, or a conv / norm / pooling class: ``weight_convert.frameworks.reference``) is
compared in it. A module that declares nothing (a new family's ``nn.Sequential`` of convs, say)
is compared in the format under which its output fits the port's: as it is (channels-last) or
with the channel axis moved last (channels-first). Where both fit (a symmetric shape such as
(1, 8, 8, 8)) or neither does, channels-last stands, as before inference.
"""

from __future__ import annotations

from collections.abc import Sequence

from zoo.tensor_format import Format

__all__ = ["fitting_format"]


def _moved(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` with axis 1 moved last (what ``to_port_format`` does to a channels-first
    tensor of more than two axes)."""
    shape = tuple(shape)
    return shape if len(shape) <= 2 else (shape[0], *shape[2:], shape[1])


def fitting_format(
    shape: Sequence[int], port_shape: Sequence[int] | None, declared: Format | None
) -> Format:
    """The format of a reference tensor of ``shape`` whose port counterpart has
    ``port_shape`` (None: no counterpart): ``declared`` when given; otherwise the one format
    under which the shapes agree, channels-last where both or neither do."""
    if declared is not None:
        return Format(declared)
    if port_shape is None:
        return Format.CHANNELS_LAST
    as_is = tuple(shape) == tuple(port_shape)
    moved = _moved(shape) == tuple(port_shape)
    if moved and not as_is:
        return Format.CHANNELS_FIRST
    return Format.CHANNELS_LAST

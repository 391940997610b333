"""Named intermediate outputs, the same in every framework. Framework-free.

A family declares the names its model can return (``Family.features``: the reference's module
paths, plus documented aliases) and its config a ``features`` field; ``create_model(name,
features=["layer2", "layer4"])`` then builds a model whose call returns ``{name: output}`` in the
order asked, in PyTorch (maps (B, C, H, W)), Keras and Flax (maps (B, H, W, C)); token outputs
are (B, N, D) everywhere. Unknown names are refused when the config is made
(``zoo.family.check_features``). The model computes nothing after the last output asked for.

A model's forward collects them with ``FeatureTaps``::

    taps = FeatureTaps(self.config.features)
    x = self.conv1(x)
    if taps.take("conv1", x):
        return taps.outputs
    ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["FeatureTaps"]


class FeatureTaps:
    """The outputs a forward pass was asked for (``wanted``: ``config.features``), gathered as
    the pass reaches them."""

    def __init__(self, wanted: Sequence[str]) -> None:
        self.wanted = tuple(wanted)
        self._got: dict[str, Any] = {}

    def take(self, name: str, value: Any) -> bool:
        """Keep ``value`` if ``name`` is wanted; True once every wanted output is in (the
        caller returns ``outputs`` then). Always False when nothing is wanted."""
        if name in self.wanted:
            self._got[name] = value
        return bool(self.wanted) and len(self._got) == len(self.wanted)

    @property
    def outputs(self) -> dict[str, Any]:
        """``{name: output}`` in the order asked for."""
        return {name: self._got[name] for name in self.wanted}

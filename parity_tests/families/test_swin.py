"""Swin Transformer (2D) in the shared suite; torchvision and timm checkpoints from their own
code. (Peer parity at odd sizes: test_swin_peers.py.)"""

from __future__ import annotations

import checkpoint_factory as factory
from family_suite import FamilySuite, ParityCase


class TestSwin(FamilySuite):
    family = "swin"
    cases = (
        ParityCase("b2-64x64", (2, 3, 64, 64)),  # stage maps 16 and 8: padded to the window 7
        ParityCase("odd-45x70", (1, 3, 45, 70)),  # no multiple of the patch; non-square
        ParityCase("features-40x56", (1, 3, 40, 56), {"features_only": True}),
    )
    makers = {
        "torchvision": lambda stem, config, seed: factory.torchvision_swin(
            stem.with_suffix(".pth"), config, seed
        )[0],
        "timm": lambda stem, config, seed: factory.timm_swin(
            stem.with_suffix(".pth"), config, seed
        )[0],
    }
    verify_shape = (1, 3, 45, 70)

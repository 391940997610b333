"""Swin Transformer (2D) in the shared suite; torchvision and timm checkpoints from their own
code, mmdetection detector checkpoints from the reference (mmdetection's own forward and
converter as authorities: test_mmdet_swin.py). (Peer parity at odd sizes: test_swin_peers.py.)"""

from __future__ import annotations

import checkpoint_factory as factory
from family_suite import FamilySuite, ParityCase


class TestSwin(FamilySuite):
    family = "swin"
    cases = (
        ParityCase("b2-64x64", (2, 3, 64, 64)),  # stage maps 16 and 8: padded to the window 7
        ParityCase("odd-45x70", (1, 3, 45, 70)),  # no multiple of the patch; non-square
        ParityCase("features-40x56", (1, 3, 40, 56), {"features_only": True}),
        # an mmdetection backbone: norm0 only, no patch / merge norms, no qkv bias; the stage
        # maps (8 x 7, 4 x 4) fit one window in W / both axes, where pad_shift still shifts
        ParityCase(
            "mmdet-30x27",
            (1, 3, 30, 27),
            dict(
                features_only=True,
                out_indices=(0,),
                patch_norm=False,
                merge_norm=False,
                qkv_bias=False,
                window_rule="pad_shift",
            ),
        ),
    )
    makers = {
        "torchvision": lambda stem, config, seed: factory.torchvision_swin(
            stem.with_suffix(".pth"), config, seed
        )[0],
        "timm": lambda stem, config, seed: factory.timm_swin(
            stem.with_suffix(".pth"), config, seed
        )[0],
        "mmdetection": lambda stem, config, seed: factory.mmdetection_swin(
            stem.with_suffix(".pth"), factory.mmdet_backbone(config), seed
        )[0],
    }
    verify_shape = (1, 3, 45, 70)

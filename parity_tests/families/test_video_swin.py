"""Video Swin in the shared suite; torchvision ``swin3d`` checkpoints from its own code. (Peer
parity with torchvision swin3d_t: test_swin_peers.py.)"""

from __future__ import annotations

import checkpoint_factory as factory
from family_suite import FamilySuite, ParityCase


class TestVideoSwin(FamilySuite):
    family = "video_swin"
    cases = (
        ParityCase("4x32x32", (1, 3, 4, 32, 32)),  # 2 frames of tokens: the window shrinks in T
        ParityCase("odd-b2-5x30x18", (2, 3, 5, 30, 18)),  # padded to the 2x4x4 patch, batch 2
        ParityCase("features-6x32x48", (1, 3, 6, 32, 48), {"features_only": True}),
    )
    makers = {
        "torchvision": lambda stem, config, seed: factory.torchvision_swin(
            stem.with_suffix(".pth"), config, seed
        )[0],
    }
    verify_shape = (1, 3, 5, 30, 18)

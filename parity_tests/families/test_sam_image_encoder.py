"""SAM's image encoder alone (timm ``samvit_*``) in the shared suite; timm checkpoints from
timm's own model. (Peer parity with segment-anything and timm, full-size ViT-B:
test_sam_image_encoder.py.)"""

from __future__ import annotations

import checkpoint_factory as factory
from family_suite import FamilySuite, ParityCase


class TestSamImageEncoder(FamilySuite):
    family = "sam_image_encoder"
    cases = (ParityCase("b2", (2, 3, 128, 128)),)
    makers = {
        "timm": lambda stem, config, seed: factory.timm_samvit(
            stem.with_suffix(".pth"), config, seed
        )[0],
        "huggingface": lambda stem, config, seed: factory.huggingface_sam(stem, config, seed)[0],
    }

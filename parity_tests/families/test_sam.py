"""Segment Anything (whole model: image encoder, prompt encoder, mask decoder) in the shared
suite; official checkpoints from segment-anything's own model. (Peer parity, prompts and the
predictor: test_sam_parts_peers.py, test_sam_parts_ports.py, test_sam_predictor.py.)"""

from __future__ import annotations

import checkpoint_factory as factory
from family_suite import FamilySuite, ParityCase


class TestSam(FamilySuite):
    family = "sam"
    # SAM takes the image at its configured size (the abs. position embedding's grid)
    cases = (ParityCase("b1", (1, 3, 128, 128)), ParityCase("b2", (2, 3, 128, 128)))
    makers = {
        "official": lambda stem, config, seed: factory.official_sam(
            stem.with_suffix(".pth"), config, seed
        )[0],
        "huggingface": lambda stem, config, seed: factory.huggingface_sam(stem, config, seed)[0],
    }

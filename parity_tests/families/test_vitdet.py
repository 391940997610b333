"""ViTDet backbone with the simple feature pyramid in the shared suite; detectron2 model-zoo
pickles with detector heads (dropped on reading). (Peer parity with segment-anything's blocks and
the full-size backbone: test_vitdet.py.)"""

from __future__ import annotations

import checkpoint_factory as factory
from family_suite import FamilySuite, ParityCase


class TestViTDet(FamilySuite):
    family = "vitdet"
    cases = (
        ParityCase("128", (1, 3, 128, 128)),
        ParityCase("non-square-64x96", (1, 3, 64, 96)),  # position embedding resized to 4 x 6
        ParityCase("b2-96x64", (2, 3, 96, 64)),
    )
    makers = {
        "detectron2": lambda stem, config, seed: factory.detectron2_vitdet(
            stem.with_suffix(".pkl"), config, seed
        )[0],
    }
    verify_shape = (1, 3, 64, 96)

"""SAM's automatic mask generator at full size (``-m slow``): SAM ViT-B at 1024 built by
segment-anything's own ``build_sam_vit_b()`` with every tensor randomized, on the astronaut
photo. The reference's records are identical to segment-anything's ``SamAutomaticMaskGenerator``
and each port (Keras on every backend, Flax) equals the reference, judged by
``zoo.amg_agreement`` as the CI tests (``test_mask_generator.py``) judge the tiny SAM: same
masks in the same order, scores within 1e-5, near-ties counted and none allowed among
decisions. 4 x 4 points (48 masks, every one kept: the generator tests' open thresholds) keep
it to 2-3 minutes per framework on 2 cores; the encoder at 1024 is the cost."""

from __future__ import annotations

import numpy as np
import pytest
from test_mask_generator import (
    OPEN,
    PHOTOS,
    _port_generator,
    assert_identical_records,
)

from weight_convert.frameworks import reference as ref_fw
from zoo.amg_agreement import agreement
from zoo.mask_generator import RecordLogits, SamAutomaticMaskGenerator, StableTiesMaskGenerator
from zoo.models import create_model

pytestmark = pytest.mark.slow

SETTINGS = dict(points_per_side=4, **OPEN)
N_MASKS = 48  # 16 points x 3 masks: nothing filtered, nothing suppressed
PHOTO = "astronaut"


@pytest.fixture(scope="module")
def models():
    """(segment-anything's ViT-B, our reference holding its weights), every tensor random."""
    from segment_anything import build_sam_vit_b

    official = ref_fw.randomize_(build_sam_vit_b(), seed=3).eval()
    ours = create_model("sam_vit_b")
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


@pytest.fixture(scope="module")
def reference_records(models) -> list[dict]:
    generator = StableTiesMaskGenerator(models[1], **SETTINGS)  # the ports' NMS tie order
    return generator.generate(PHOTOS[PHOTO])


def test_reference_equals_segment_anything_vit_b(models):
    from segment_anything import SamAutomaticMaskGenerator as Official

    image = PHOTOS[PHOTO]
    official = Official(models[0], **SETTINGS)
    theirs = official.generate(image)
    ours = SamAutomaticMaskGenerator(models[1], **SETTINGS).generate(image)
    assert len(theirs) == N_MASKS
    worst = assert_identical_records(theirs, ours)
    print(f"reference vs segment-anything, ViT-B {PHOTO}: {N_MASKS} identical masks ({worst:.1e})")


def test_port_generators_equal_reference_vit_b(models, reference_records, port_name):
    image = PHOTOS[PHOTO]
    settings = StableTiesMaskGenerator(models[1], **SETTINGS)
    got = _port_generator(port_name, models[1], **SETTINGS).generate(image)
    report = agreement(reference_records, got, settings, RecordLogits(settings, image))
    print(f"{port_name} vs reference, ViT-B {PHOTO}: {report.row()}")
    assert report.ok, report.failures[:5]
    assert not report.near_ties, report.near_ties
    assert report.matched == len(reference_records) == N_MASKS
    assert np.isfinite([r["predicted_iou"] for r in got]).all()

"""Whole models, random weights (every parameter randomized), every port: max abs error of every
output <= 1e-4 x its std, and every aligned layer within the same relative bound.

Tiny variants run in CI at their default and odd sizes (Video Swin-T's full 16 x 224 x 224 clip
is ``slow``); the other variants are ``slow``:
``bash scripts/test.sh -m slow -k models_parity`` (see README).
"""

from __future__ import annotations

import pytest

from weight_convert.parity import run_model
from zoo.configs import VARIANTS, arch_fields

SWIN_T = "swin_tiny_patch4_window7_224"
VIDEO_T = "video_swin_tiny"

CASES = [
    pytest.param(SWIN_T, (2, 3, 224, 224), {}, id="swin_t-224-b2"),
    # 190 x 250 is no multiple of the patch; the last stage (6 x 8) is smaller than the window.
    pytest.param(SWIN_T, (1, 3, 190, 250), {}, id="swin_t-odd-190x250"),
    pytest.param(SWIN_T, (1, 3, 96, 160), {"features_only": True}, id="swin_t-features"),
    # the full-size clip: -m slow (CI time ~40 s; the odd and features cases below run in CI)
    pytest.param(
        VIDEO_T, (1, 3, 16, 224, 224), {}, id="video_swin_t-16x224", marks=pytest.mark.slow
    ),
    # odd T, H, W: padding to the 2x4x4 patch and to the 8x7x7 window, window shrunk in T.
    pytest.param(VIDEO_T, (2, 3, 5, 70, 50), {}, id="video_swin_t-odd-b2-5x70x50"),
    pytest.param(VIDEO_T, (1, 3, 6, 64, 96), {"features_only": True}, id="video_swin_t-features"),
]


def _first_of_its_architecture(name: str) -> bool:
    """Whether no variant registered before ``name`` has its architecture (the Video Swin
    releases share theirs with ``video_swin_{size}``, differing in head or training only)."""
    config = VARIANTS[name].config

    def arch(c) -> tuple:
        return type(c), *(getattr(c, f) for f in arch_fields(c))

    return next(n for n, v in VARIANTS.items() if arch(v.config) == arch(config)) == name


#: every other variant at its own resolution (``run_model``'s default input: the family's),
#: one per architecture
SLOW = [
    pytest.param(name, None, {}, id=name, marks=pytest.mark.slow)
    for name, variant in VARIANTS.items()
    if variant.config.family in ("swin", "video_swin")
    and name not in (SWIN_T, VIDEO_T)
    and _first_of_its_architecture(name)
]


@pytest.mark.parametrize(("name", "shape", "overrides"), CASES + SLOW)
def test_model_parity(name, shape, overrides, port):
    report = run_model(name, port, shape, overrides=overrides)
    assert report.passed, report.table()
    assert report.group == name
    assert not report.unmatched, report.unmatched
    # Every block of every stage was compared, not only the output.
    assert sum(e.path.endswith(".mlp") for e in report.layers) == sum(
        VARIANTS[name].config.depths
    ), report.table()
    if overrides.get("features_only"):
        assert len(report.outputs) == len(VARIANTS[name].config.depths)

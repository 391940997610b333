"""Whole models against real code nobody here wrote: torchvision ``swin3d_t`` and ``swin_t``, timm
``swin_tiny_patch4_window7_224``. The peer gets random weights (``randomize_``), its state dict is
mapped with ``weight_convert.layouts`` into the reference and loaded strictly, and the logits must
agree to 1e-5 (max abs).

Where the peers disagree with the official Swin code, the reference follows the official code and
the tests pin the difference down (see the docstrings of the ``test_known_difference_*`` tests).
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torchvision.models import swin_t
from torchvision.models.video import swin3d_t

from weight_convert import layouts
from weight_convert.frameworks.reference import randomize_
from zoo.models import create_model

ATOL = 1e-5


def _numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _tensors(sd: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def _reference_from_peer(peer: torch.nn.Module, seed: int, **overrides) -> torch.nn.Module:
    """Randomize ``peer``, detect its layout, load its weights strictly into the reference."""
    randomize_(peer, seed).eval()
    sd = _numpy(peer)
    detected = layouts.detect(sd)
    ours = create_model(detected.variant, **detected.overrides(), **overrides)
    ours.load_state_dict(_tensors(layouts.to_reference(sd, detected)), strict=True)
    return ours


def _peer_from_reference(peer: torch.nn.Module, ours: torch.nn.Module, layout: str):
    """Load the reference's weights into ``peer`` strictly through ``layouts.from_reference``."""
    sd = layouts.from_reference(_numpy(ours), layout, ours.config.family, ours.config)
    peer.load_state_dict(_tensors(sd), strict=True)
    return peer.eval()


def _inputs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


_OUTPUTS: dict[tuple, tuple[torch.nn.Module, torch.Tensor]] = {}


@torch.no_grad()
def _run(model: torch.nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """The model's logits on ``_inputs(*shape)``, computed once per model and shape (the models
    live in module-scoped fixtures; the CPU forwards dominate this file's time)."""
    key = (id(model), tuple(shape))
    if key not in _OUTPUTS:  # the entry holds the model, so its id is not reused meanwhile
        _OUTPUTS[key] = (model, model(_inputs(*shape)))
    return _OUTPUTS[key][1]


@pytest.fixture(scope="module", autouse=True)
def _clear_outputs():
    yield
    _OUTPUTS.clear()


def _err(a: torch.nn.Module, b: torch.nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
    """(max abs difference of the logits on ``_inputs(*shape)``, max abs logit)."""
    ya, yb = _run(a, shape), _run(b, shape)
    assert ya.shape == yb.shape
    return (ya - yb).abs().max().item(), ya.abs().max().item()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def video_pair():
    peer = swin3d_t()
    ours = _reference_from_peer(peer, seed=11)
    return ours, peer


@pytest.fixture(scope="module")
def tv2d_pair():
    peer = swin_t()
    ours = _reference_from_peer(peer, seed=12)
    return ours, peer


@pytest.fixture(scope="module")
def timm_pair():
    peer = timm.create_model("swin_tiny_patch4_window7_224")
    ours = _reference_from_peer(peer, seed=13)
    return ours, peer


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 16, 224, 224), (1, 3, 5, 70, 50), (2, 3, 8, 64, 96)],
    ids=["16x224x224", "odd-5x70x50", "batch2-8x64x96"],
)
def test_video_swin_equals_torchvision_swin3d_t(video_pair, shape):
    ours, peer = video_pair
    err, scale = _err(ours, peer, shape)
    assert err <= ATOL, f"max abs error {err:.2e} (logits up to {scale:.1f})"


@pytest.mark.parametrize("hw", [(224, 224), (256, 320)], ids=["224", "256x320"])
def test_swin_equals_torchvision_swin_t(tv2d_pair, hw):
    ours, peer = tv2d_pair
    err, scale = _err(ours, peer, (1, 3, *hw))
    assert err <= ATOL, f"max abs error {err:.2e} (logits up to {scale:.1f})"


def test_swin_equals_timm_224(timm_pair):
    ours, peer = timm_pair
    err, scale = _err(ours, peer, (1, 3, 224, 224))
    assert err <= ATOL, f"max abs error {err:.2e} (logits up to {scale:.1f})"


def test_swin_equals_timm_non_square(timm_pair):
    """timm fixes the input size at creation: a 224x448 model (same weights; the tables and masks
    are derived) against the reference at 224x448 (maps 56x112 .. 7x14, all window multiples)."""
    ours, peer224 = timm_pair
    peer = timm.create_model("swin_tiny_patch4_window7_224", img_size=(224, 448)).eval()
    peer.load_state_dict(peer224.state_dict(), strict=True)
    err, scale = _err(ours, peer, (1, 3, 224, 448))
    assert err <= ATOL, f"max abs error {err:.2e} (logits up to {scale:.1f})"


# --------------------------------------------------------------------------- known differences


def test_known_difference_torchvision_floors_the_patch(tv2d_pair):
    """(a) At an input that is not a multiple of the patch (226), torchvision's ``swin_t``
    patch conv drops the last 2 rows / columns, while the official code (and the reference)
    zero-pads to 228. The reference at 226 equals the reference on the input zero-padded to 228,
    torchvision's patch embedding at 226 equals it on the input cropped to 224, and torchvision's
    logits at 226 differ from the reference's."""
    ours, peer = tv2d_pair
    x = _inputs(1, 3, 226, 226)
    with torch.no_grad():
        y = ours(x)
        padded = ours(F.pad(x, (0, 2, 0, 2)))
        theirs = peer(x)
        embed = peer.features[0](x)
        embed_cropped = peer.features[0](x[..., :224, :224])
    assert (y - padded).abs().max().item() <= 1e-6
    assert embed.shape == embed_cropped.shape == (1, 56, 56, 96)
    assert torch.equal(embed, embed_cropped)
    assert (y - theirs).abs().max().item() > 1e-2


def test_known_difference_timm_shifts_before_padding(tv2d_pair):
    """(b) At 256x320 no stage map (64x80, 32x40, 16x20, 8x10) is a multiple of the window 7. The
    official code and torchvision pad the map to the window first and then roll it; timm rolls the
    unpadded map and pads after, so its shifted windows group other tokens. The reference equals
    torchvision there (test_swin_equals_torchvision_swin_t[256x320]) and timm, created at 256x320
    with the same weights, differs."""
    ours, peer_tv = tv2d_pair
    peer_timm = timm.create_model("swin_tiny_patch4_window7_224", img_size=(256, 320))
    _peer_from_reference(peer_timm, ours, "timm")
    shape = (1, 3, 256, 320)
    err_tv, scale = _err(ours, peer_tv, shape)
    assert err_tv <= ATOL, f"max abs error {err_tv:.2e} (logits up to {scale:.1f})"
    err_timm, _ = _err(ours, peer_timm, shape)
    assert err_timm > 1e-2


def test_small_maps_keep_the_window_as_torchvision_does(tv2d_pair):
    """(c) At 160x160 the last stage is 5x5, smaller than the window 7. The 2D reference keeps the
    7x7 window and its bias table and pads the map (``window_rule='pad'``), as torchvision does,
    so it equals torchvision there. Video Swin's rule (``'shrink'``) would take the first 25 x 25
    entries of the 7x7 index, which in 2D scrambles the geometry; it is the 3D default only
    (official Video Swin and torchvision swin3d do exactly that) and differs here."""
    ours, peer = tv2d_pair
    assert ours.config.window_rule == "pad"
    shape = (1, 3, 160, 160)
    err, scale = _err(ours, peer, shape)
    assert err <= ATOL, f"max abs error {err:.2e} (logits up to {scale:.1f})"
    shrinking = create_model("swin_tiny_patch4_window7_224", window_rule="shrink")
    shrinking.load_state_dict(ours.state_dict(), strict=True)
    err_shrink, _ = _err(shrinking, peer, shape)
    assert err_shrink > 1e-2

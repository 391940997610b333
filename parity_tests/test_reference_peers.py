"""The reference blocks against real code nobody here wrote, with identical random weights:
segment-anything (ViTDet attention, blocks, LayerNorm2d, rel-pos functions) and timm (Swin 2D
window attention and block, window partition)."""

from __future__ import annotations

import pytest
import torch

import zoo.layers as L
from weight_convert.frameworks.reference import randomize_


def _same_weights(ours: torch.nn.Module, peer: torch.nn.Module, seed: int = 0) -> None:
    randomize_(ours, seed)
    peer.load_state_dict(ours.state_dict(), strict=True)
    ours.eval()
    peer.eval()


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= atol, err


@pytest.mark.parametrize("hw,window", [((14, 14), 7), ((10, 13), 7), ((16, 12), 4), ((5, 9), 7)])
def test_window_partition_2d_matches_segment_anything(hw, window):
    from segment_anything.modeling.image_encoder import window_partition, window_unpartition

    x = torch.randn(2, *hw, 8)
    ours, pad_hw = L.window_partition_padded(x, window)
    theirs, their_pad = window_partition(x, window)
    assert pad_hw == their_pad
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(
        L.window_unpartition(ours, window, pad_hw, hw),
        window_unpartition(theirs, window, pad_hw, hw),
    )
    torch.testing.assert_close(L.window_unpartition(ours, window, pad_hw, hw), x, rtol=0, atol=0)


def test_window_partition_3d_round_trip_and_order():
    x = torch.randn(2, 4, 6, 8, 3)
    w = (2, 3, 4)
    windows = L.window_partition(x, w)
    assert windows.shape == (2 * 2 * 2 * 2, 2, 3, 4, 3)
    # Window 1 of image 0 is the next window along the last (W) axis.
    torch.testing.assert_close(windows[1], x[0, 0:2, 0:3, 4:8], rtol=0, atol=0)
    torch.testing.assert_close(L.window_reverse(windows, w, (4, 6, 8)), x, rtol=0, atol=0)


@pytest.mark.parametrize("q,k,length", [(8, 8, 15), (9, 9, 11), (4, 4, 13), (6, 10, 19)])
def test_get_rel_pos_matches_segment_anything(q, k, length):
    from segment_anything.modeling.image_encoder import get_rel_pos

    table = torch.randn(length, 8)
    _close(L.get_rel_pos(q, k, table), get_rel_pos(q, k, table), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,hw",
    [
        (dict(dim=32, num_heads=4, use_rel_pos=True, input_size=(8, 8)), (8, 8)),
        (dict(dim=32, num_heads=4, use_rel_pos=True, input_size=(6, 6)), (9, 7)),
        (dict(dim=32, num_heads=4), (5, 6)),
    ],
)
def test_vitdet_attention_matches_segment_anything(kwargs, hw):
    from segment_anything.modeling.image_encoder import Attention

    ours, theirs = L.Attention(**kwargs), Attention(**kwargs)
    _same_weights(ours, theirs)
    x = torch.randn(2, *hw, 32)
    with torch.no_grad():
        _close(ours(x), theirs(x))


@pytest.mark.parametrize(
    "kwargs,hw",
    [
        (dict(dim=32, num_heads=4, use_rel_pos=True, window_size=5), (12, 9)),
        (dict(dim=32, num_heads=4, use_rel_pos=True, window_size=14), (6, 10)),
        (dict(dim=32, num_heads=4, use_rel_pos=True, input_size=(8, 10)), (8, 10)),
    ],
)
def test_vitdet_block_matches_segment_anything(kwargs, hw):
    from segment_anything.modeling.image_encoder import Block

    ours, theirs = L.Block(**kwargs), Block(**kwargs)
    _same_weights(ours, theirs)
    x = torch.randn(2, *hw, 32)
    with torch.no_grad():
        _close(ours(x), theirs(x))


def test_layernorm2d_matches_segment_anything():
    from segment_anything.modeling.common import LayerNorm2d

    ours, theirs = L.LayerNorm2d(16), LayerNorm2d(16)
    _same_weights(ours, theirs)
    x = torch.randn(2, 16, 7, 9) * 3 + 1
    _close(ours(x), theirs(x))


@pytest.mark.parametrize("window,heads,masked", [(7, 4, False), (7, 4, True), (4, 2, True)])
def test_window_attention_2d_matches_timm(window, heads, masked):
    from timm.models.swin_transformer import WindowAttention

    from zoo.windows import shifted_window_mask

    ours = L.WindowAttention(32, (window, window), heads)
    theirs = WindowAttention(32, num_heads=heads, window_size=window)
    _same_weights(ours, theirs)
    n = window * window
    mask = None
    if masked:
        mask = torch.from_numpy(
            shifted_window_mask((2 * window, 3 * window), (window,) * 2, (window // 2,) * 2).copy()
        )
    x = torch.randn(12, n, 32)
    with torch.no_grad():
        _close(ours(x, mask), theirs(x, mask))


@pytest.mark.parametrize("hw,shift", [((14, 14), 0), ((14, 21), 3), ((21, 7), 3), ((7, 7), 3)])
def test_swin_block_2d_matches_timm(hw, shift):
    """timm shrinks the window and drops the shift where the map is not larger than the window,
    like the "shrink" rule; compared where timm's table keeps the configured size (maps >= 7).

    Maps that are not window multiples are left out on purpose: timm shifts before padding,
    while the official Swin (detection) and Video Swin code pad first and then shift, which the
    reference follows (see test_swin_block_pads_before_shift)."""
    from timm.models.swin_transformer import SwinTransformerBlock

    ours = L.SwinTransformerBlock(32, 4, (7, 7), (shift, shift))
    theirs = SwinTransformerBlock(32, hw, num_heads=4, window_size=7, shift_size=shift)
    _same_weights(ours, theirs)
    x = torch.randn(2, *hw, 32)
    with torch.no_grad():
        _close(ours(x), theirs(x))


def test_patch_merging_2d_matches_timm():
    from timm.models.swin_transformer import PatchMerging

    ours, theirs = L.PatchMerging(16), PatchMerging(16)
    _same_weights(ours, theirs)
    x = torch.randn(2, 8, 6, 16)
    with torch.no_grad():
        _close(ours(x), theirs(x))


def test_swin_block_pads_before_shift():
    """Official order: norm1, pad to window multiples, cyclic shift over the padded map."""
    import torch.nn.functional as F

    from zoo.windows import shifted_window_mask

    block = randomize_(L.SwinTransformerBlock(16, 2, (7, 7), (3, 3))).eval()
    x = torch.randn(1, 10, 13, 16)
    with torch.no_grad():
        y = F.pad(block.norm1(x), (0, 0, 0, 1, 0, 4))
        y = torch.roll(y, (-3, -3), (1, 2))
        w = L.window_partition(y, (7, 7)).flatten(1, 2)
        mask = torch.from_numpy(shifted_window_mask((14, 14), (7, 7), (3, 3)).copy())
        y = L.window_reverse(block.attn(w, mask).reshape(-1, 7, 7, 16), (7, 7), (14, 14))
        y = x + torch.roll(y, (3, 3), (1, 2))[:, :10, :13]
        expected = y + block.mlp(block.norm2(y))
        _close(block(x), expected, atol=1e-6)

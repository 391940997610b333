"""Framework-free window tables against the official semantics as implemented by timm,
torchvision and segment-anything."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.windows import (
    MASK_VALUE,
    bias_table_size,
    effective_window,
    get_window_size,
    pad_amounts,
    rel_pos_gather_index,
    rel_pos_resize_matrix,
    relative_position_index,
    shifted_window_mask,
)


@pytest.mark.parametrize("window", [(7, 7), (4, 6), (12, 12), (1, 3)])
def test_relative_position_index_2d_matches_timm(window):
    from timm.models.swin_transformer import get_relative_position_index

    expected = get_relative_position_index(*window).numpy()
    np.testing.assert_array_equal(relative_position_index(window), expected)
    assert relative_position_index(window).max() == bias_table_size(window) - 1


@pytest.mark.parametrize("window", [(8, 7, 7), (2, 4, 4), (3, 2, 5)])
def test_relative_position_index_3d_matches_torchvision(window):
    from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

    attn = ShiftedWindowAttention3d(8, list(window), [0, 0, 0], num_heads=2)
    n = int(np.prod(window))
    expected = attn.relative_position_index.reshape(n, n).numpy()
    np.testing.assert_array_equal(relative_position_index(window), expected)
    assert attn.relative_position_bias_table.shape[0] == bias_table_size(window)


@pytest.mark.parametrize(
    "padded,window,shift",
    [
        ((8, 14, 14), (4, 7, 7), (2, 3, 3)),
        ((4, 8, 12), (2, 4, 4), (1, 2, 2)),
        ((2, 8, 8), (2, 4, 4), (0, 2, 2)),
        ((6, 4, 4), (3, 4, 4), (1, 0, 0)),
    ],
)
def test_shift_mask_3d_matches_torchvision(padded, window, shift):
    from torchvision.models.video.swin_transformer import _compute_attention_mask_3d

    x = torch.zeros(1, *padded, 4)
    expected = _compute_attention_mask_3d(x, padded, window, shift).numpy()
    n = int(np.prod(window))
    np.testing.assert_array_equal(
        shifted_window_mask(padded, window, shift), expected.reshape(-1, n, n)
    )


@pytest.mark.parametrize("res,window,shift", [((14, 14), 7, 3), ((14, 21), 7, 3), ((12, 8), 4, 2)])
def test_shift_mask_2d_matches_timm(res, window, shift):
    from timm.models.swin_transformer import SwinTransformerBlock

    block = SwinTransformerBlock(16, res, num_heads=2, window_size=window, shift_size=shift)
    expected = block.attn_mask.numpy()
    np.testing.assert_array_equal(shifted_window_mask(res, (window,) * 2, (shift,) * 2), expected)


def test_shift_mask_values_and_none():
    mask = shifted_window_mask((14, 14), (7, 7), (3, 3))
    assert mask.shape == (4, 49, 49)
    assert set(np.unique(mask)) == {0.0, MASK_VALUE}
    assert not mask[0].any()  # the top-left window is one region
    assert shifted_window_mask((14, 14), (7, 7), (0, 0)) is None


def test_get_window_size_video_swin_rule():
    assert get_window_size((8, 56, 56), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (0, 3, 3))
    assert get_window_size((16, 56, 56), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 3, 3))
    assert get_window_size((3, 5, 9), (8, 7, 7), (4, 3, 3)) == ((3, 5, 7), (0, 0, 3))


def test_pad_rule_keeps_window():
    assert effective_window((5, 9), (7, 7), (3, 3), "pad") == ((7, 7), (0, 3))
    assert effective_window((7, 7), (7, 7), (3, 3), "pad") == ((7, 7), (0, 0))
    with pytest.raises(ValueError, match="unknown window rule"):
        effective_window((7, 7), (7, 7), (3, 3), "other")


def test_pad_amounts():
    assert pad_amounts((10, 13, 14), (7, 7, 7)) == (4, 1, 0)


@pytest.mark.parametrize("length,target", [(11, 17), (13, 7), (5, 5), (1, 9), (27, 127)])
def test_rel_pos_resize_matrix_matches_interpolate(length, target):
    table = torch.randn(length, 6)
    expected = F.interpolate(table.T[None], size=target, mode="linear")[0].T.numpy()
    got = rel_pos_resize_matrix(length, target) @ table.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("q,k", [(8, 8), (14, 14), (9, 5), (4, 10)])
def test_rel_pos_gather_index_matches_segment_anything(q, k):
    from segment_anything.modeling.image_encoder import get_rel_pos

    length = 2 * max(q, k) - 1
    table = torch.arange(length, dtype=torch.float32)[:, None].repeat(1, 3)
    expected = get_rel_pos(q, k, table)[..., 0].numpy().astype(np.int64)
    np.testing.assert_array_equal(rel_pos_gather_index(q, k), expected)


def test_tables_are_read_only_and_cached():
    a = relative_position_index((7, 7))
    assert a is relative_position_index((7, 7))
    with pytest.raises(ValueError):
        a[0, 0] = 1

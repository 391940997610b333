"""SAM's prompt encoder and mask decoder (with the two-way transformer): the reference equals
segment-anything's modules (same kwargs, identical random weights, identical state-dict keys)."""

from __future__ import annotations

import pytest
import torch
from sam_parts import FULL, SMALL, Sizes, prompts, split

from weight_convert.frameworks.reference import randomize_
from zoo.models.sam_mask_decoder import MaskDecoder
from zoo.models.sam_prompt_encoder import PromptEncoder

# ----------------------------------------------------------------------------- peers


def _peer_prompt_encoder(sizes: Sizes, seed: int = 0):
    from segment_anything.modeling import PromptEncoder as Official

    torch.manual_seed(seed)  # the Fourier matrix is a buffer, drawn at construction
    peer = randomize_(Official(**sizes.prompt_kwargs()), seed).eval()
    ours = PromptEncoder(**sizes.prompt_kwargs()).eval()
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict(), strict=True)
    return peer, ours


def _peer_mask_decoder(sizes: Sizes, seed: int = 1):
    from segment_anything.modeling import MaskDecoder as Official
    from segment_anything.modeling import TwoWayTransformer

    transformer = TwoWayTransformer(
        depth=sizes.depth,
        embedding_dim=sizes.embed_dim,
        num_heads=sizes.heads,
        mlp_dim=sizes.mlp_dim,
    )
    peer = Official(
        transformer_dim=sizes.embed_dim,
        transformer=transformer,
        num_multimask_outputs=sizes.multimask,
        iou_head_depth=3,
        iou_head_hidden_dim=sizes.iou_hidden,
    )
    peer = randomize_(peer, seed).eval()
    ours = MaskDecoder(**sizes.decoder_kwargs()).eval()
    assert list(ours.state_dict()) == list(peer.state_dict())
    ours.load_state_dict(peer.state_dict(), strict=True)
    return peer, ours


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).detach().abs().max()) if a.numel() else 0.0


PEER_PROMPTS = [
    (("points",), 1, 3),
    (("boxes",), 1, 0),
    (("points", "boxes"), 1, 2),
    (("masks",), 1, 0),
    (("points", "boxes", "masks"), 2, 4),
    (("points", "masks"), 2, 1),
    ((), 1, 0),
]


@pytest.mark.parametrize("sizes", [FULL, SMALL], ids=["full", "small"])
@pytest.mark.parametrize("kinds,batch,n", PEER_PROMPTS, ids=lambda v: str(v))
def test_prompt_encoder_matches_segment_anything(sizes, kinds, batch, n):
    peer, ours = _peer_prompt_encoder(sizes)
    arrays = [torch.from_numpy(a) for a in prompts(sizes, kinds, batch, n, seed=3)]
    with torch.no_grad():
        expected = peer(*split(kinds, arrays))
        got = ours(*split(kinds, arrays))
        assert _max_err(ours.get_dense_pe(), peer.get_dense_pe()) <= 1e-6
    for e, g in zip(expected, got, strict=True):
        assert _max_err(e, g) <= 1e-6


def test_prompt_encoder_labels_match_segment_anything():
    """Explicit padding (-1) labels and labels the official point path leaves unembedded."""
    peer, ours = _peer_prompt_encoder(SMALL)
    coords = torch.rand(2, 5, 2) * 90
    labels = torch.tensor([[1, 0, -1, -1, 2], [3, 1, 1, 0, -1]], dtype=torch.int32)
    with torch.no_grad():
        for boxes in (None, torch.tensor([[1.0, 2.0, 50.0, 80.0]] * 2)):
            expected = peer((coords, labels), boxes, None)
            got = ours((coords, labels), boxes, None)
            for e, g in zip(expected, got, strict=True):
                assert _max_err(e, g) <= 1e-6


PEER_DECODERS = [
    pytest.param(FULL, True, 2, id="full-multimask-b2"),
    pytest.param(FULL, False, 1, id="full-single-b1"),
    *(
        pytest.param(SMALL, m, b, id=f"small-{'multimask' if m else 'single'}-b{b}")
        for m in (True, False)
        for b in (1, 2)
    ),
]


@pytest.mark.parametrize("sizes,multimask,batch", PEER_DECODERS)
def test_mask_decoder_matches_segment_anything(sizes, multimask, batch):
    peer_pe, _ = _peer_prompt_encoder(sizes)
    peer, ours = _peer_mask_decoder(sizes)
    kinds = ("points", "boxes", "masks") if batch == 2 else ("points",)
    arrays = [torch.from_numpy(a) for a in prompts(sizes, kinds, batch, 3, seed=5)]
    gen = torch.Generator().manual_seed(7)
    image = torch.randn(1, sizes.embed_dim, *sizes.embedding_hw, generator=gen)
    with torch.no_grad():
        sparse, dense = peer_pe(*split(kinds, arrays))
        args = (image, peer_pe.get_dense_pe(), sparse, dense, multimask)
        expected, got = peer(*args), ours(*args)
    m = sizes.multimask if multimask else 1
    assert expected[0].shape == (batch, m, *(4 * s for s in sizes.embedding_hw))
    for e, g in zip(expected, got, strict=True):
        # random weights give masks of magnitude ~10: 1e-5 relative to the largest value
        assert _max_err(e, g) <= 1e-5 * max(1.0, float(e.abs().max()))

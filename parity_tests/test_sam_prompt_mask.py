"""SAM's prompt encoder and mask decoder (with the two-way transformer).

Peer: the reference equals segment-anything's modules (same kwargs, identical random weights,
identical state-dict keys). Ports: Keras and Flax equal the reference through the parity harness
(strict weight transfer, per-layer comparison). The modules take optional prompts and a Python
bool, so each framework gets a small wrapper here that fixes them; the wrappers keep the
official parent names (``prompt_encoder.*``, ``mask_decoder.*``) and are mirrored per framework.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from weight_convert.frameworks import reference as ref_fw
from weight_convert.frameworks.reference import randomize_
from weight_convert.parity import BLOCK_TOLERANCE, Tolerance, compare, load_reference_weights
from zoo.models.sam_mask_decoder import MaskDecoder
from zoo.models.sam_prompt_encoder import PromptEncoder
from zoo.tensor_format import Format, to_port_format, to_reference_format


@dataclass(frozen=True)
class Sizes:
    """One SAM head configuration; ``full`` is the official one (all three ViT sizes)."""

    embed_dim: int = 256
    embedding_hw: tuple[int, int] = (64, 64)
    input_hw: tuple[int, int] = (1024, 1024)
    mask_in_chans: int = 16
    depth: int = 2
    heads: int = 8
    mlp_dim: int = 2048
    iou_hidden: int = 256
    multimask: int = 3

    def prompt_kwargs(self) -> dict:
        return dict(
            embed_dim=self.embed_dim,
            image_embedding_size=self.embedding_hw,
            input_image_size=self.input_hw,
            mask_in_chans=self.mask_in_chans,
        )

    def decoder_kwargs(self) -> dict:
        return dict(
            transformer_dim=self.embed_dim,
            num_multimask_outputs=self.multimask,
            iou_head_depth=3,
            iou_head_hidden_dim=self.iou_hidden,
            transformer_depth=self.depth,
            transformer_num_heads=self.heads,
            transformer_mlp_dim=self.mlp_dim,
        )


FULL = Sizes()
# Non-square embedding grid, small widths.
SMALL = Sizes(32, (6, 10), (96, 160), 16, 2, 4, 64, 32, 3)


def _prompts(sizes: Sizes, kinds: tuple[str, ...], batch: int, n_points: int, seed: int):
    """Reference-layout numpy inputs for ``kinds``: coords, labels, boxes, masks (B, 1, 4H, 4W)."""
    rng = np.random.default_rng(seed)
    h, w = sizes.input_hw
    arrays = []
    if "points" in kinds:
        coords = rng.uniform(0, 1, (batch, n_points, 2)) * np.array([w, h])
        labels = rng.integers(-1, 2, (batch, n_points))
        labels[:, 0], labels[:, -1] = 1, 0  # both polarities in every prompt set
        arrays += [coords.astype(np.float32), labels.astype(np.int32)]
    if "boxes" in kinds:
        corners = np.sort(rng.uniform(0, 1, (batch, 2, 2)), axis=1) * np.array([w, h])
        arrays.append(corners.reshape(batch, 4).astype(np.float32))
    if "masks" in kinds:
        mh, mw = (4 * s for s in sizes.embedding_hw)
        arrays.append(rng.standard_normal((batch, 1, mh, mw), dtype=np.float32))
    return arrays


def _split(kinds: tuple[str, ...], arrays):
    """(points, boxes, masks) from the positional inputs the harness passes, None where absent."""
    arrays = list(arrays)
    points = (arrays.pop(0), arrays.pop(0)) if "points" in kinds else None
    boxes = arrays.pop(0) if "boxes" in kinds else None
    masks = arrays.pop(0) if "masks" in kinds else None
    return points, boxes, masks


def _layouts(kinds: tuple[str, ...]) -> list[Format]:
    """Reference layouts of the ``_prompts`` arrays: only the masks are channels-first maps."""
    per_kind = {"points": ["channels_last"] * 2, "boxes": ["channels_last"]}
    per_kind["masks"] = ["channels_first"]
    return [Format(x) for k in kinds for x in per_kind[k]]


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
    arrays = [torch.from_numpy(a) for a in _prompts(sizes, kinds, batch, n, seed=3)]
    with torch.no_grad():
        expected = peer(*_split(kinds, arrays))
        got = ours(*_split(kinds, arrays))
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
    arrays = [torch.from_numpy(a) for a in _prompts(sizes, kinds, batch, 3, seed=5)]
    gen = torch.Generator().manual_seed(7)
    image = torch.randn(1, sizes.embed_dim, *sizes.embedding_hw, generator=gen)
    with torch.no_grad():
        sparse, dense = peer_pe(*_split(kinds, arrays))
        args = (image, peer_pe.get_dense_pe(), sparse, dense, multimask)
        expected, got = peer(*args), ours(*args)
    m = sizes.multimask if multimask else 1
    assert expected[0].shape == (batch, m, *(4 * s for s in sizes.embedding_hw))
    for e, g in zip(expected, got, strict=True):
        # random weights give masks of magnitude ~10: 1e-5 relative to the largest value
        assert _max_err(e, g) <= 1e-5 * max(1.0, float(e.abs().max()))


# ----------------------------------------------------------------------------- port wrappers


class RefPrompt(nn.Module):
    """Reference prompt encoder with fixed prompt kinds. Returns sparse (B, N', C), dense and
    the dense positional encoding, the last two moved to channels-last here so that the harness
    compares all three in the ports' layout."""

    output_format = Format.CHANNELS_LAST

    def __init__(self, sizes: Sizes, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.kinds = kinds
        self.prompt_encoder = PromptEncoder(**sizes.prompt_kwargs())

    def forward(self, *arrays):
        sparse, dense = self.prompt_encoder(*_split(self.kinds, arrays))
        pe = self.prompt_encoder.get_dense_pe()
        # contiguous: without masks ``dense`` is a view of ``no_mask_embed.weight``
        return sparse, dense.permute(0, 2, 3, 1).contiguous(), pe.permute(0, 2, 3, 1)


class RefDecoder(nn.Module):
    """Reference mask decoder with a fixed ``multimask_output``; masks are channels-first."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, sizes: Sizes, multimask: bool) -> None:
        super().__init__()
        self.multimask = multimask
        self.mask_decoder = MaskDecoder(**sizes.decoder_kwargs())

    def forward(self, image, image_pe, sparse, dense):
        return self.mask_decoder(image, image_pe, sparse, dense, self.multimask)


def _keras_wrappers():
    import keras

    from ports.keras.models.sam_mask_decoder import MaskDecoder as KMaskDecoder
    from ports.keras.models.sam_prompt_encoder import PromptEncoder as KPromptEncoder

    class KerasPrompt(keras.layers.Layer):
        def __init__(self, sizes, kinds, **kwargs):
            super().__init__(**kwargs)
            self.kinds = kinds
            self.prompt_encoder = KPromptEncoder(**sizes.prompt_kwargs(), name="prompt_encoder")

        def build(self, input_shape=None):
            self.prompt_encoder.build()

        def call(self, x0=None, x1=None, x2=None, x3=None, training=None):
            arrays = [x for x in (x0, x1, x2, x3) if x is not None]
            sparse, dense = self.prompt_encoder(*_split(self.kinds, arrays))
            return sparse, dense, self.prompt_encoder.get_dense_pe()

    class KerasDecoder(keras.layers.Layer):
        def __init__(self, sizes, multimask, **kwargs):
            super().__init__(**kwargs)
            self.multimask = multimask
            self.mask_decoder = KMaskDecoder(**sizes.decoder_kwargs(), name="mask_decoder")

        def build(self, input_shape=None):
            self.mask_decoder.build()

        def call(self, image, image_pe, sparse, dense, training=None):
            return self.mask_decoder(
                image, image_pe, sparse, dense, multimask_output=self.multimask
            )

    return KerasPrompt, KerasDecoder


def _flax_wrappers():
    from flax import nnx

    from ports.flax.models.sam_mask_decoder import MaskDecoder as FMaskDecoder
    from ports.flax.models.sam_prompt_encoder import PromptEncoder as FPromptEncoder

    class FlaxPrompt(nnx.Module):
        def __init__(self, sizes, kinds, *, rngs):
            self.kinds = kinds
            self.prompt_encoder = FPromptEncoder(**sizes.prompt_kwargs(), rngs=rngs)

        def __call__(self, *arrays):
            sparse, dense = self.prompt_encoder(*_split(self.kinds, arrays))
            return sparse, dense, self.prompt_encoder.get_dense_pe()

    class FlaxDecoder(nnx.Module):
        def __init__(self, sizes, multimask, *, rngs):
            self.multimask = multimask
            self.mask_decoder = FMaskDecoder(**sizes.decoder_kwargs(), rngs=rngs)

        def __call__(self, image, image_pe, sparse, dense):
            return self.mask_decoder(image, image_pe, sparse, dense, self.multimask)

    return FlaxPrompt, FlaxDecoder


def _port_module(port, which: str, sizes: Sizes, arg):
    """The port wrapper ``which`` ("prompt" or "decoder"), variables created."""
    if port.NAME == "flax":
        from flax import nnx

        prompt, decoder = _flax_wrappers()
        cls = prompt if which == "prompt" else decoder
        module = cls(sizes, arg, rngs=nnx.Rngs(0))
        module.eval()
        return module
    prompt, decoder = _keras_wrappers()
    cls = prompt if which == "prompt" else decoder
    module = cls(sizes, arg, name="root")
    module.build()
    return module


def _assert_report(report, *expected_layers: str) -> None:
    assert report.passed, report.table()
    compared = {e.path for e in report.layers}
    for path in expected_layers:
        assert path in compared, (path, report.table())
    # Only the maps the reference records channels-first without declaring it stay unaligned:
    # the conv stacks (nn.Sequential, run item by item in the ports), their nn.GELU items and
    # the C x H x W grid encoding.
    unaligned = {
        "mask_downscaling",
        "mask_downscaling.2",
        "mask_downscaling.5",
        "pe_layer",
        "output_upscaling",
        "output_upscaling.2",
        "output_upscaling.4",
    }
    assert all(p.split(".", 1)[1] in unaligned for p in report.unmatched), report.unmatched


# (sizes, kinds, batch, points): CI runs the small configuration; the official sizes are slow
# tests (Flax runs eagerly, op by op, and compiles every new shape).
PORT_PROMPTS = [
    pytest.param(SMALL, ("points",), 2, 3, id="small-points"),
    pytest.param(SMALL, ("boxes",), 1, 0, id="small-boxes", marks=pytest.mark.slow),
    pytest.param(SMALL, ("points", "boxes", "masks"), 2, 2, id="small-mixed"),
    pytest.param(SMALL, (), 1, 0, id="small-none"),
    pytest.param(FULL, ("points", "boxes"), 2, 2, id="full-points-boxes", marks=pytest.mark.slow),
    pytest.param(FULL, ("masks",), 1, 0, id="full-masks", marks=pytest.mark.slow),
    pytest.param(FULL, ("points", "boxes", "masks"), 1, 5, id="full-mixed", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("sizes,kinds,batch,n", PORT_PROMPTS)
def test_prompt_encoder_port_parity(port, sizes, kinds, batch, n):
    torch.manual_seed(0)  # the Fourier matrix buffer
    reference = randomize_(RefPrompt(sizes, kinds), 0).eval()
    module = _port_module(port, "prompt", sizes, kinds)
    inputs = _prompts(sizes, kinds, batch, n, seed=11)
    report = compare(reference, module, port, inputs, _layouts(kinds), tolerance=BLOCK_TOLERANCE)
    expected = ["prompt_encoder.mask_downscaling.6"] if "masks" in kinds else []
    _assert_report(report, *expected)
    assert report.max_abs <= 1e-5


# The decoder's 256-wide projections of values up to ~10 round to a few 1e-6: 1e-5 plus 1e-5 x
# std of each compared tensor.
DECODER_TOLERANCE = Tolerance(atol=1e-5, rtol=1e-5)

PORT_DECODERS = [
    pytest.param(SMALL, 2, True, id="small-b2-multimask"),
    pytest.param(SMALL, 1, False, id="small-b1-single", marks=pytest.mark.slow),
    pytest.param(FULL, 2, True, id="full-b2-multimask", marks=pytest.mark.slow),
    pytest.param(FULL, 1, False, id="full-b1-single", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("sizes,batch,multimask", PORT_DECODERS)
def test_mask_decoder_port_parity(port, sizes, batch, multimask):
    reference = randomize_(RefDecoder(sizes, multimask), 2).eval()
    module = _port_module(port, "decoder", sizes, multimask)
    rng = np.random.default_rng(13)
    c, (h, w) = sizes.embed_dim, sizes.embedding_hw
    inputs = [
        rng.standard_normal((1, c, h, w), dtype=np.float32),  # image embedding
        rng.uniform(-1, 1, (1, c, h, w)).astype(np.float32),  # dense PE (sin / cos range)
        rng.standard_normal((batch, 3, c), dtype=np.float32),  # sparse prompts
        rng.standard_normal((batch, c, h, w), dtype=np.float32),  # dense prompts
    ]
    layouts = [Format.CHANNELS_FIRST, Format.CHANNELS_FIRST, Format.CHANNELS_LAST]
    layouts.append(Format.CHANNELS_FIRST)
    report = compare(reference, module, port, inputs, layouts, tolerance=DECODER_TOLERANCE)
    _assert_report(
        report,
        "mask_decoder.transformer.layers.0.self_attn",
        "mask_decoder.transformer.layers.1.cross_attn_image_to_token",
        "mask_decoder.transformer.layers.1.mlp.act",
        "mask_decoder.transformer.norm_final_attn",
        "mask_decoder.output_upscaling.1",
        "mask_decoder.output_upscaling.3",
        "mask_decoder.output_hypernetworks_mlps.0",
        "mask_decoder.iou_prediction_head",
    )
    m = sizes.multimask if multimask else 1
    assert report.outputs[0].shape == (batch, 4 * h, 4 * w, m)
    assert report.outputs[1].shape == (batch, m)


def _jit_outputs(port_name: str, module, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The port wrapper's outputs compiled: ``nnx.jit``, ``jax.jit`` of Keras' stateless call, or
    an XLA ``tf.function``."""
    if port_name == "flax":
        from flax import nnx

        return [np.asarray(o) for o in nnx.jit(lambda m, *xs: m(*xs))(module, *inputs)]
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        fn = jax.jit(lambda tv, ntv, *xs: module.stateless_call(tv, ntv, *xs)[0])
        trainable = [v.value for v in module.trainable_variables]
        outs = fn(trainable, [v.value for v in module.non_trainable_variables], *inputs)
        return [np.asarray(o) for o in outs]
    if backend == "tensorflow":
        import tensorflow as tf

        outs = tf.function(module.call, jit_compile=True)(*[tf.constant(x) for x in inputs])
        return [o.numpy() for o in outs]
    raise NotImplementedError(backend)


def test_ports_jit_match_reference(port, port_name):
    """Prompt encoder then mask decoder, compiled: static shapes, no branching on values."""
    if port_name == "keras" and port.NAME == "keras-torch":
        pytest.skip("no jit path exercised for the torch backend (torch.compile is slow on CPU)")
    kinds = ("points", "boxes", "masks")
    torch.manual_seed(0)  # the Fourier matrix buffer
    prompt_ref = randomize_(RefPrompt(SMALL, kinds), 0).eval()
    decoder_ref = randomize_(RefDecoder(SMALL, False), 2).eval()
    prompt = _port_module(port, "prompt", SMALL, kinds)
    decoder = _port_module(port, "decoder", SMALL, False)
    inputs = _prompts(SMALL, kinds, 1, 3, seed=17)
    port_inputs = [to_port_format(x, lay) for x, lay in zip(inputs, _layouts(kinds), strict=True)]
    load_reference_weights(port, prompt, prompt_ref, port_inputs)
    sparse, dense, pe = ref_fw.call(prompt_ref, inputs)
    got = _jit_outputs(port_name, prompt, port_inputs)
    for e, g in zip((sparse, dense, pe), got, strict=True):
        assert np.max(np.abs(g - e), initial=0.0) <= 1e-5

    image = np.random.default_rng(19).standard_normal((1, *SMALL.embedding_hw, SMALL.embed_dim))
    port_inputs = [image.astype(np.float32), pe, sparse, dense]
    ref_inputs = [to_reference_format(x, Format.CHANNELS_FIRST) for x in port_inputs]
    ref_inputs[2] = sparse
    load_reference_weights(port, decoder, decoder_ref, port_inputs)
    masks, iou = ref_fw.call(decoder_ref, ref_inputs)
    got = _jit_outputs(port_name, decoder, port_inputs)
    assert got[0].shape == (1, *(4 * s for s in SMALL.embedding_hw), 1)
    expected = to_port_format(masks, Format.CHANNELS_FIRST)
    assert np.max(np.abs(got[0] - expected)) <= DECODER_TOLERANCE.bound(expected)
    assert np.max(np.abs(got[1] - iou)) <= DECODER_TOLERANCE.bound(iou)

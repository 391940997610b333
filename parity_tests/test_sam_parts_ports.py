"""SAM's prompt encoder and mask decoder in the ports: Keras and Flax equal the reference through
the parity harness (strict weight transfer, per-layer comparison). The modules take optional
prompts and a Python bool, so each framework gets a small wrapper here that fixes them; the
wrappers keep the official parent names (``prompt_encoder.*``, ``mask_decoder.*``) and are
mirrored per framework. (The whole Sam model with point prompts: the shared suite.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam_parts import FULL, SMALL, Sizes, prompt_formats, prompts, split
from torch import nn

from weight_convert.frameworks import reference as ref_fw
from weight_convert.frameworks.reference import randomize_
from weight_convert.parity import BLOCK_TOLERANCE, Tolerance, compare, load_reference_weights
from zoo.models.sam_mask_decoder import MaskDecoder
from zoo.models.sam_prompt_encoder import PromptEncoder
from zoo.tensor_format import Format, to_port_format, to_reference_format

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
        sparse, dense = self.prompt_encoder(*split(self.kinds, arrays))
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
            sparse, dense = self.prompt_encoder(*split(self.kinds, arrays))
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
            sparse, dense = self.prompt_encoder(*split(self.kinds, arrays))
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
    inputs = prompts(sizes, kinds, batch, n, seed=11)
    report = compare(
        reference, module, port, inputs, prompt_formats(kinds), tolerance=BLOCK_TOLERANCE
    )
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
    inputs = prompts(SMALL, kinds, 1, 3, seed=17)
    port_inputs = [
        to_port_format(x, lay) for x, lay in zip(inputs, prompt_formats(kinds), strict=True)
    ]
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

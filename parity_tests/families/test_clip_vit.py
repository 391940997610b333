"""CLIP's ViT image encoder in the shared suite, checkpoints made by open_clip (OpenAI's layout,
float16 as OpenAI releases them) and transformers (``CLIPVisionModelWithProjection``), and the
peers themselves: open_clip's ``ViT-B-16`` and transformers' model agree with the reference, and
the ports with it. The CLIP trap: QuickGELU, not GELU."""

from __future__ import annotations

import dataclasses
import importlib
import os

import numpy as np
import pytest
import torch
from family_suite import FamilySuite, ParityCase, reference_model

from weight_convert.frameworks.reference import randomize_
from zoo.families.clip_vit import ClipViTConfig, feature_names

#: open_clip's and transformers' vision towers are held to the reference within this x the
#: output's std (fp32, whole model), as the ports are
MODEL_RTOL = 1e-4


def open_clip_model(config: ClipViTConfig, seed: int) -> torch.nn.Module:
    """open_clip's whole ``CLIP`` (text tower included, tiny) with ``config``'s image tower,
    QuickGELU as OpenAI's weights run, every tensor random."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=config.layers,
        width=config.width,
        head_width=config.width // config.heads,
        mlp_ratio=config.mlp_ratio,
        patch_size=config.patch_size,
        image_size=config.img_size,
    )
    text = CLIPTextCfg(context_length=8, vocab_size=40, width=32, heads=2, layers=1)
    model = CLIP(config.output_dim, vision, text, quick_gelu=True)
    return randomize_(model, seed).eval()


def openai_checkpoint(stem, config: ClipViTConfig, seed: int, half: bool = False) -> str:
    """A whole-CLIP state dict in OpenAI's layout: open_clip's model (its keys are OpenAI's),
    with ``half`` in float16 as OpenAI releases it (its ``convert_weights``: convs, linears,
    attention and ``proj`` in float16; norms and embeddings float32)."""
    from open_clip.model import convert_weights_to_lp

    model = open_clip_model(config, seed)
    if half:
        convert_weights_to_lp(model, torch.float16)
    path = f"{stem}.pt"
    torch.save(model.state_dict(), path)
    return path


def huggingface_module(config: ClipViTConfig):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hf = CLIPVisionConfig(
        hidden_size=config.width,
        intermediate_size=int(config.width * config.mlp_ratio),
        projection_dim=config.output_dim,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_channels=config.in_chans,
        image_size=config.img_size,
        patch_size=config.patch_size,
    )
    return CLIPVisionModelWithProjection(hf).eval()


def huggingface_checkpoint(stem, config: ClipViTConfig, seed: int) -> str:
    """transformers' ``save_pretrained`` directory of a random ``CLIPVisionModelWithProjection``."""
    module = randomize_(huggingface_module(config), seed).eval()
    module.save_pretrained(stem)
    return os.fspath(stem)


def visual_checkpoint(stem, config: ClipViTConfig, seed: int) -> str:
    """open_clip's ``model.visual.state_dict()`` (float32)."""
    path = f"{stem}.pth"
    torch.save(open_clip_model(config, seed).visual.state_dict(), path)
    return path


class TestClipViT(FamilySuite):
    family = "clip_vit"
    cases = (
        ParityCase("32", (1, 3, 32, 32)),
        ParityCase("odd-b2-39x33", (2, 3, 39, 33)),  # floors to the trained 4 x 4 grid
    )
    makers = {
        "openai": openai_checkpoint,
        "visual": visual_checkpoint,
        "huggingface": huggingface_checkpoint,
    }
    verify_shape = (1, 3, 39, 33)

    def test_gelu_for_quickgelu_fails_at_the_first_mlp(self, port, monkeypatch):
        """A port running GELU where CLIP runs QuickGELU: parity fails at the first block's
        MLP activation (``transformer.resblocks.0.mlp.gelu``), every layer before it passing."""
        framework = port.NAME.split("-")[0]
        module = importlib.import_module(f"ports.{framework}.models.clip_vit")
        if framework == "keras":
            from keras import ops

            monkeypatch.setattr(module.QuickGELU, "call", lambda self, x: ops.gelu(x, False))
        else:
            import jax

            monkeypatch.setattr(
                module.QuickGELU, "__call__", lambda self, x: jax.nn.gelu(x, approximate=False)
            )
        report = self.run_parity(port, self.tiny())
        assert not report.passed
        assert report.first_failure.path == "transformer.resblocks.0.mlp.gelu", report.table()
        before = report.layers[: report.layers.index(report.first_failure)]
        assert before and all(not e.exceeded for e in before)

    def test_grid_must_be_the_trained_one(self, framework):
        """The positional embedding is not resized: an image whose token grid is not the
        trained one is refused before the first layer, naming the sizes."""
        config = self.tiny()
        x, _ = self.spec().make_inputs(config, (1, 3, 39, 33))
        assert tuple(self._call(framework, x, symbolic=True).shape) == (1, config.output_dim)
        x, _ = self.spec().make_inputs(config, (1, 3, 40, 32))
        with pytest.raises(ValueError, match=r"40x32 image gives a 5x4 token grid .*4x4"):
            self._call(framework, x)


def test_feature_names_and_shapes():
    """``features`` names every block's tokens (B, N, D), ``ln_pre``, ``ln_post`` and ``proj``
    (the embedding itself), returned in the order asked (the ports' agreement with these: the
    shared suite's ``test_features``)."""
    tiny = TestClipViT.tiny()
    names = feature_names(tiny)
    assert names == (
        "ln_pre",
        "transformer.resblocks.0",
        "transformer.resblocks.1",
        "ln_post",
        "proj",
    )
    config = dataclasses.replace(tiny, features=(names[2], "proj", "ln_pre"))
    reference = reference_model(config, seed=4)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in reference(torch.from_numpy(x)).items()}
        whole = reference_model(tiny, seed=4)(torch.from_numpy(x)).numpy()
    assert list(want) == list(config.features)
    assert np.array_equal(want["proj"], whole)
    assert want["ln_pre"].shape == (2, 17, 128) and want["proj"].shape == (2, 24)


# --------------------------------------------------------------------------- peers


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.std())


def test_open_clip_keys_are_openai_layout():
    """open_clip's whole-CLIP state dict is OpenAI's layout key for key: detected as
    ``openai`` with the text tower dropped by rule and counted, its ``visual`` tower loads into
    the reference strictly, and the reference agrees with open_clip's image tower at the
    trained size and an odd one."""
    from weight_convert import layouts
    from zoo.models import build_model

    config = TestClipViT.tiny()
    peer = open_clip_model(config, seed=5)
    sd = {k: v.numpy() for k, v in peer.state_dict().items()}
    detected = layouts.detect(sd)
    assert (detected.layout, detected.family, detected.config) == ("openai", "clip_vit", config)
    text = [k for k in sd if not k.startswith("visual.")]
    assert text and f"{len(text)} tensor(s) outside the model dropped" in " ".join(detected.notes)
    reference = build_model(config)
    reference.load_state_dict(peer.visual.state_dict(), strict=True)
    for shape in ((2, 3, 32, 32), (1, 3, 39, 33)):
        x = torch.randn(shape)
        with torch.no_grad():
            want, got = peer.visual(x), reference(x)
        assert _max_error(want, got) <= MODEL_RTOL, shape


def test_huggingface_peer_agrees(tmp_path):
    """transformers' ``CLIPVisionModelWithProjection``: its ``save_pretrained`` directory loads
    with ``create_model(checkpoint=DIR)`` (q / k / v fused, ``visual_projection`` transposed)
    and the reference's embedding is its ``image_embeds``; a config.json with another
    activation is refused."""
    import json

    from weight_convert import layouts
    from zoo.models import create_model

    config = TestClipViT.tiny()
    peer = randomize_(huggingface_module(config), 6).eval()
    peer.save_pretrained(tmp_path / "hf")
    model = create_model(checkpoint=str(tmp_path / "hf"))
    assert model.config == config
    x = torch.randn(2, 3, 39, 33)
    with torch.no_grad():
        want = peer(pixel_values=x[..., :32, :32]).image_embeds
        got = model(x[..., :32, :32])
    assert _max_error(want, got) <= MODEL_RTOL
    c = json.loads((tmp_path / "hf" / "config.json").read_text())
    c["hidden_act"] = "gelu"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(c))
    with pytest.raises(layouts.LayoutError, match="hidden_act='gelu'.*quick_gelu"):
        create_model(checkpoint=str(tmp_path / "hf"))


def test_float16_release_round_trips_and_runs_float32(tmp_path):
    """OpenAI's float16 tensors (and its float32 norms and embeddings) stay bit-exact, dtypes
    included, through Flax and back to the layout; the model loaded from them computes in
    float32 on the float16 values. (Through a Keras file too, which is read back in each
    dataset's dtype: test_clip_torchscript.py.)"""
    from family_suite import assert_same_checkpoint

    from weight_convert import checkpoints, convert
    from zoo.models import create_model

    config = TestClipViT.tiny()
    source = openai_checkpoint(tmp_path / "openai", config, 7, half=True)
    tensors, _ = checkpoints.load_state_dict(source)
    assert tensors["visual.conv1.weight"].dtype == np.float16
    assert tensors["visual.ln_pre.weight"].dtype == np.float32
    flax, _ = convert.convert(source, "flax", tmp_path / "f")
    back, _ = convert.convert(flax.outputs[0], "torch", tmp_path / "back.pth", layout="openai")
    text = sum(not k.startswith("visual.") for k in tensors)
    assert_same_checkpoint(back.outputs[0], source, text)
    model = create_model(checkpoint=source)
    assert model.conv1.weight.dtype == torch.float32
    assert torch.equal(model.conv1.weight, torch.from_numpy(tensors["visual.conv1.weight"]).float())


@pytest.mark.slow
def test_open_clip_vit_b16_full_size():
    """open_clip's ``ViT-B-16`` (QuickGELU, random weights): the reference holds its visual
    state dict strict and agrees at 224 and at 239 x 230 (floors to 14 x 14)."""
    import open_clip

    from zoo.models import create_model

    peer = randomize_(open_clip.create_model("ViT-B-16-quickgelu", pretrained=None), 8).eval()
    reference = create_model("clip_vit_b16").eval()
    reference.load_state_dict(peer.visual.state_dict(), strict=True)
    for shape in ((2, 3, 224, 224), (1, 3, 239, 230)):
        x = torch.randn(shape)
        with torch.no_grad():
            assert _max_error(peer.visual(x), reference(x)) <= MODEL_RTOL, shape


@pytest.mark.parametrize(
    "name", ["clip_vit_b32", "clip_vit_b16", "clip_vit_l14", "clip_vit_l14_336"]
)
def test_variants_are_detected_from_their_shapes(name):
    """Each OpenAI release's shapes name its variant in every layout (the head count, in no
    shape, by OpenAI's rule width // 64), with no note of an assumption; a custom width states
    the heads it assumed."""
    from weight_convert import layouts
    from zoo.configs import VARIANTS, reference_shapes

    config = VARIANTS[name].config
    zeros = {k: np.zeros(s, np.float32) for k, s in reference_shapes(config).items()}
    for layout in layouts.family_layouts("clip_vit"):
        sd = layouts.from_reference(zeros, layout, "clip_vit", config)
        detected = layouts.detect(sd)
        assert (detected.layout, detected.variant, detected.config) == (layout, name, config)
        assert not any("head count" in n for n in detected.notes)
    custom = dataclasses.replace(TestClipViT.tiny(), width=192, heads=3)
    zeros = {k: np.zeros(s, np.float32) for k, s in reference_shapes(custom).items()}
    detected = layouts.detect(layouts.from_reference(zeros, "openai", "clip_vit", custom))
    assert detected.config == custom
    assert any("head count is in no tensor's shape: 3" in n for n in detected.notes)

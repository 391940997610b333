"""CLIP's ResNet image encoder (OpenAI's ``ModifiedResNet``) in the shared suite, checkpoints
made by open_clip (OpenAI's keys), and open_clip's ``RN50`` image tower as a peer. BatchNorm runs
on random running statistics (``randomize_``), so eps and the statistics' use are tested."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from family_suite import FamilySuite, ParityCase, reference_model

from weight_convert.frameworks.reference import randomize_
from zoo.families.clip_resnet import ClipResNetConfig, feature_names

#: open_clip's image tower is held to the reference within this x the output's std (fp32)
MODEL_RTOL = 1e-4


def open_clip_model(config: ClipResNetConfig, seed: int) -> torch.nn.Module:
    """open_clip's whole ``CLIP`` (a tiny text tower) with ``config``'s ModifiedResNet, every
    tensor random (BatchNorm statistics included)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=config.layers,
        width=config.width,
        head_width=config.embed_dim // config.heads,
        image_size=config.img_size,
    )
    text = CLIPTextCfg(context_length=8, vocab_size=40, width=32, heads=2, layers=1)
    return randomize_(CLIP(config.output_dim, vision, text, quick_gelu=True), seed).eval()


def openai_checkpoint(stem, config: ClipResNetConfig, seed: int) -> str:
    """A whole-CLIP state dict in OpenAI's keys, as open_clip's model writes it."""
    path = f"{stem}.pt"
    torch.save(open_clip_model(config, seed).state_dict(), path)
    return path


def visual_checkpoint(stem, config: ClipResNetConfig, seed: int) -> str:
    """open_clip's ``model.visual.state_dict()``."""
    path = f"{stem}.pth"
    torch.save(open_clip_model(config, seed).visual.state_dict(), path)
    return path


class TestClipResNet(FamilySuite):
    family = "clip_resnet"
    cases = (
        ParityCase("64", (1, 3, 64, 64)),
        ParityCase("odd-b2-65x79", (2, 3, 65, 79)),  # floors to the trained 2 x 2 map
    )
    makers = {"openai": openai_checkpoint, "visual": visual_checkpoint}
    verify_shape = (1, 3, 65, 79)

    def test_batchnorm_eps_1e3_fails_at_the_first_norm(self, port, monkeypatch):
        """The ports' BatchNorm at Keras's default eps 1e-3 instead of PyTorch's 1e-5: parity
        fails at the stem's first BatchNorm, ``bn1``, the conv before it passing."""
        framework = port.NAME.split("-")[0]
        if framework == "keras":
            from ports.keras.layers.norm import BatchNorm2d
        else:
            from ports.flax.layers.norm import BatchNorm2d
        init = BatchNorm2d.__init__

        def keras_eps(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.eps = 1e-3

        monkeypatch.setattr(BatchNorm2d, "__init__", keras_eps)
        report = self.run_parity(port, self.tiny())
        assert not report.passed
        assert report.first_failure.path == "bn1", report.table()
        assert report.layers[0].path == "conv1" and not report.layers[0].exceeded

    def test_map_must_be_the_trained_one(self, framework):
        """The positional embedding of attnpool is not resized: an image reducing to another
        map is refused before the first layer, naming the sizes."""
        config = self.tiny()
        x, _ = self.spec().make_inputs(config, (1, 3, 65, 79))
        assert tuple(self._call(framework, x, symbolic=True).shape) == (1, config.output_dim)
        x, _ = self.spec().make_inputs(config, (1, 3, 96, 64))
        with pytest.raises(ValueError, match=r"96x64 image gives a 3x2 map at attnpool .*2x2"):
            self._call(framework, x)


def test_feature_names_and_shapes():
    """``features`` names the stem, every block and stage and ``attnpool``, returned in the
    order asked (the ports' agreement with these: the shared suite's ``test_features``)."""
    tiny = TestClipResNet.tiny()
    names = feature_names(tiny)
    assert names[:3] == ("stem", "layer1.0", "layer1") and names[-1] == "attnpool"
    assert len(names) == 1 + sum(tiny.layers) + 4 + 1
    config = dataclasses.replace(tiny, features=("layer2.1", "stem", "attnpool"))
    reference = reference_model(config, seed=4)
    x = np.random.default_rng(0).standard_normal((2, 3, 65, 79), dtype=np.float32)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in reference(torch.from_numpy(x)).items()}
    assert list(want) == list(config.features)
    assert want["stem"].shape == (2, 8, 16, 20) and want["attnpool"].shape == (2, 16)


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.std())


def test_open_clip_keys_are_openai_layout():
    """open_clip's whole-CLIP state dict with a ModifiedResNet is OpenAI's layout: detected as
    ``openai`` (text tower dropped and counted); its ``visual`` loads into the reference
    strictly and agrees at the trained size and an odd one."""
    from weight_convert import layouts
    from zoo.models import build_model

    config = TestClipResNet.tiny()
    peer = open_clip_model(config, seed=5)
    sd = {k: v.numpy() for k, v in peer.state_dict().items()}
    detected = layouts.detect(sd)
    assert (detected.layout, detected.family, detected.config) == ("openai", "clip_resnet", config)
    text = [k for k in sd if not k.startswith("visual.")]
    assert f"{len(text)} tensor(s) outside the model dropped" in " ".join(detected.notes)
    reference = build_model(config)
    reference.load_state_dict(peer.visual.state_dict(), strict=True)
    for shape in ((2, 3, 64, 64), (1, 3, 65, 79)):
        x = torch.randn(shape)
        with torch.no_grad():
            assert _max_error(peer.visual(x), reference(x)) <= MODEL_RTOL, shape


@pytest.mark.parametrize(
    "name", ["clip_rn50", "clip_rn101", "clip_rn50x4", "clip_rn50x16", "clip_rn50x64"]
)
def test_variants_are_detected_from_their_shapes(name):
    from weight_convert import layouts
    from zoo.configs import VARIANTS, reference_shapes

    config = VARIANTS[name].config
    zeros = {k: np.zeros(s, np.float32) for k, s in reference_shapes(config).items()}
    for layout in layouts.family_layouts("clip_resnet"):
        detected = layouts.detect(layouts.from_reference(zeros, layout, "clip_resnet", config))
        assert (detected.layout, detected.variant, detected.config) == (layout, name, config)


@pytest.mark.slow
def test_open_clip_rn50_full_size():
    """open_clip's ``RN50`` (random weights and statistics): the reference holds its visual
    state dict strict and agrees at 224 and 239 x 225 (both give the 7 x 7 map)."""
    import open_clip

    from zoo.models import create_model

    peer = randomize_(open_clip.create_model("RN50", pretrained=None), 8).eval()
    reference = create_model("clip_rn50").eval()
    reference.load_state_dict(peer.visual.state_dict(), strict=True)
    for shape in ((2, 3, 224, 224), (1, 3, 239, 225)):
        x = torch.randn(shape)
        with torch.no_grad():
            assert _max_error(peer.visual(x), reference(x)) <= MODEL_RTOL, shape

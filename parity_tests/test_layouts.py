"""Checkpoint loading and layout detection / renaming (weight_convert.checkpoints, .layouts) on
checkpoints written by torchvision, timm and, for the official layouts, the reference converted
and wrapped as the releases are (checkpoint_factory)."""

from __future__ import annotations

import dataclasses

import checkpoint_factory as factory
import numpy as np
import pytest
import torch

from weight_convert import layouts
from weight_convert.checkpoints import CheckpointError, load_state_dict
from weight_convert.errors import MissingKeysError
from weight_convert.layouts import LayoutError
from weight_convert.tensors import LazyTensor
from zoo.configs import (
    VARIANTS,
    UnknownVariantError,
    match_variant,
    nearest_variant,
    reference_shapes,
    resolve,
)
from zoo.families.video_swin import RELEASES
from zoo.models import create_model
from zoo.registry import FAMILIES
from zoo.windows import relative_position_index

FACTORIES = {
    "torchvision_swin3d": (factory.torchvision_swin3d, "torchvision", "video_swin"),
    "torchvision_swin2d": (factory.torchvision_swin2d, "torchvision", "swin"),
    "timm_swin2d": (factory.timm_swin2d, "timm", "swin"),
    "official_video_swin": (factory.official_video_swin, "official", "video_swin"),
    "official_swin2d": (factory.official_swin2d, "official", "swin"),
}
VARIANT = {"swin": "swin_tiny_patch4_window7_224", "video_swin": "video_swin_tiny"}
WRAPPER = {"official_video_swin": "state_dict", "official_swin2d": "model"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """name -> (path, reference state dict); each checkpoint written once per module."""
    root = tmp_path_factory.mktemp("ckpt")
    return {
        name: fn(root / f"{name}.pth", seed=i)
        for i, (name, (fn, _, _)) in enumerate(FACTORIES.items())
    }


def _load_strict(model: torch.nn.Module, sd: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_detect_convert_and_round_trip(made, name):
    _, layout, family = FACTORIES[name]
    path, reference = made[name]
    sd, info = load_state_dict(path)
    assert info["format"] == "torch"
    assert info["wrapper"] == WRAPPER.get(name)
    if name == "official_video_swin":
        assert "meta" in info["ignored"]

    detected = layouts.detect(sd)
    assert (detected.layout, detected.family) == (layout, family)
    assert detected.variant == VARIANT[family]
    assert detected.overrides() == {}
    assert detected.config == VARIANTS[VARIANT[family]].config

    converted = layouts.to_reference(sd, detected)
    model = create_model(detected.variant)
    assert list(converted) == list(model.state_dict())
    _load_strict(model, converted)
    for key, value in converted.items():
        np.testing.assert_array_equal(value, reference[key])
        assert any(value is v for v in sd.values()), f"{key} was copied"

    back = layouts.from_reference(converted, layout, family)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        np.testing.assert_array_equal(back[key], value)


def test_official_2d_attn_masks_match_timm_buffers():
    """The attn_mask buffers written for official 2D checkpoints equal those the timm model
    computes at 224 (a peer check of the derived buffers)."""
    import timm

    peer = timm.create_model("swin_tiny_patch4_window7_224")
    ours = layouts.from_reference(
        {k: v.numpy() for k, v in create_model(VARIANT["swin"]).state_dict().items()},
        "official",
        "swin",
    )
    masks = {k: v for k, v in ours.items() if k.endswith("attn_mask")}
    theirs = {k: v.numpy() for k, v in peer.named_buffers() if k.endswith("attn_mask")}
    assert sorted(masks) == sorted(theirs)
    for key, value in masks.items():
        np.testing.assert_array_equal(value, theirs[key])


def test_describe(made):
    sd, _ = load_state_dict(made["torchvision_swin3d"][0])
    info = layouts.describe(layouts.detect(sd), sd)
    model = create_model("video_swin_tiny")
    assert info["layout"] == "torchvision" and info["family"] == "video_swin"
    assert info["variant"] == "video_swin_tiny"
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["tensors"] == len(sd)
    assert info["derived_buffers"] == 12
    assert info["dtypes"] == ["float32", "int64"]
    assert info["config"]["class"] == "VideoSwinConfig"
    assert info["config"]["depths"] == (2, 2, 6, 2)


def test_altered_relative_position_index_is_refused(made):
    sd, _ = load_state_dict(made["official_video_swin"][0])
    key = "backbone.layers.1.blocks.0.attn.relative_position_index"
    sd[key] = sd[key].copy()
    sd[key][0, 1] += 1
    with pytest.raises(LayoutError, match="relative_position_index.*window"):
        layouts.detect(sd)
    # A flattened torchvision 2D index with a transposed window is refused too.
    sd2, _ = load_state_dict(made["torchvision_swin2d"][0])
    key = "features.3.1.attn.relative_position_index"
    sd2[key] = sd2[key].reshape(49, 49).T.reshape(-1).copy()
    with pytest.raises(LayoutError, match="features.3.1.attn.relative_position_index"):
        layouts.detect(sd2)


@pytest.mark.parametrize(
    "family,message",
    [
        ("swin", r"\(shape \(23170, 23170\)\) is not the relative position index of window"),
        ("video_swin", "index of 23170 tokens per window, more than the 2535 bias-table rows"),
    ],
)
def test_window_index_is_checked_from_its_shape(family, message):
    """A relative_position_index claiming (23170, 23170) (4 GiB of int64) is refused from its
    shape, its data never read: 2D by the derived-buffer check, 3D already when the window is
    solved (N tokens per window cannot exceed the bias table's rows)."""
    config = FAMILIES[family].tiny
    reference = {k: np.zeros(s, np.float32) for k, s in reference_shapes(config).items()}
    state = layouts.from_reference(reference, "official", family, config)
    key = next(k for k in state if k.endswith("relative_position_index"))

    def read() -> np.ndarray:
        raise AssertionError(f"{key} was read before its shape was compared")

    state[key] = LazyTensor((23170, 23170), np.int64, read)
    with pytest.raises(LayoutError, match=message):
        layouts.detect(state)


@pytest.mark.parametrize(
    "sd,expect",
    [
        ({"conv1.weight": np.zeros((64, 3, 7, 7)), "fc.weight": np.zeros((10, 64))}, "2 tensor"),
        ({}, "empty"),
    ],
)
def test_unrelated_state_dict_raises(sd, expect):
    with pytest.raises(LayoutError, match=expect) as e:
        layouts.detect(sd)
    assert "\n" not in str(e.value)


def test_partial_match_is_reported(made):
    sd, _ = load_state_dict(made["timm_swin2d"][0])
    del sd["layers.2.blocks.3.mlp.fc2.bias"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(MissingKeysError) as e:  # the closest layout names both problems
        layouts.detect(sd)
    msg = str(e.value)
    assert msg.startswith("timm/swin checkpoint: 1 missing tensor(s): layers.2.blocks.3.mlp.fc2")
    assert "1 unexpected: extra.weight" in msg and "\n" not in msg


def test_torchvision_real_resnet_is_not_swin():
    from torchvision.models import resnet18

    # a ResNet is a family of its own now: detected as resnet18, never as a Swin
    sd = {k: v.numpy() for k, v in resnet18().state_dict().items()}
    detected = layouts.detect(sd)
    assert (detected.family, detected.variant) == ("resnet", "resnet18")


def test_custom_architecture(tmp_path):
    """A custom architecture names no variant but its nearest, with the overrides that build
    exactly its config: the model they make loads the checkpoint strictly."""
    path, reference = factory.official_video_swin(
        tmp_path / "custom.pth", seed=3, depths=(2, 2, 4, 2), num_classes=17
    )
    sd, _ = load_state_dict(path)
    detected = layouts.detect(sd)
    assert detected.variant is None
    assert detected.config.depths == (2, 2, 4, 2)
    assert detected.config.num_classes == 17
    assert detected.config.window_size == (8, 7, 7)
    assert detected.nearest_variant == "video_swin_tiny"
    # drop_path_rate: the config class's default, which a custom checkpoint keeps
    assert detected.overrides() == {
        "depths": (2, 2, 4, 2),
        "num_classes": 17,
        "drop_path_rate": 0.2,
    }
    model = create_model(detected.nearest_variant, **detected.overrides())
    assert model.config == detected.config
    _load_strict(model, layouts.to_reference(sd, detected))

    # 2D: a smaller custom model, features only (no head), window 5.
    path, _ = factory.official_swin2d(
        tmp_path / "custom2d.pth",
        embed_dim=32,
        depths=(1, 3),
        num_heads=(2, 4),
        window_size=(5, 5),
        features_only=True,
        qkv_bias=False,
        mlp_ratio=2.0,
    )
    sd, _ = load_state_dict(path)
    detected = layouts.detect(sd)
    assert detected.variant is None
    cfg = detected.config
    assert (cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size) == (
        32,
        (1, 3),
        (2, 4),
        (5, 5),
    )
    assert (cfg.features_only, cfg.qkv_bias, cfg.mlp_ratio) == (True, False, 2.0)
    model = create_model(detected.nearest_variant, **detected.overrides())
    assert model.config == cfg
    _load_strict(model, layouts.to_reference(sd, detected))
    _load_strict(create_model(cfg), layouts.to_reference(sd, detected))  # the config itself


def test_inspect_names_the_nearest_variant_of_timm_swin_256_window8():
    """Issue 14's case: timm's Swin-T built at 256 with window 8 is no variant; ``describe``
    (what ``inspect`` prints) names the nearest, Swin-T window 7 (one field differs; window 12
    at 384 differs in one too and is registered later), and the override that builds it."""
    import timm

    with torch.device("meta"):  # shapes only
        peer = timm.create_model("swin_tiny_patch4_window7_224", img_size=256, window_size=8)
    sd = peer.state_dict()
    detected = layouts.detect(sd)
    info = layouts.describe(detected, sd)
    assert (info["layout"], info["variant"]) == ("timm", None)
    assert info["nearest_variant"] == "swin_tiny_patch4_window7_224"
    assert info["overrides"] == {"window_size": (8, 8)}
    with torch.device("meta"):
        model = create_model(info["nearest_variant"], **info["overrides"])
    assert model.config == detected.config
    shapes = {k: tuple(v.shape) for k, v in layouts.to_reference(sd, detected).items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes


def test_nearest_variant_ranks_architecture_then_head_then_order():
    """``nearest_variant``: fewest differing architecture fields, then head fields, then
    registration order; ``resolve`` of its answer is the config, and an exact architecture is
    ``match_variant``'s."""
    sthv2 = VARIANTS["video_swin_base_patch244_window1677_sthv2"].config
    cases = [
        # window 16 and 174 classes: the Something-Something v2 release itself
        (sthv2, "video_swin_base_patch244_window1677_sthv2", {}),
        # its architecture with 400 classes: the window-16 Kinetics-400 release (the head
        # decides), which differs in its drop-path rate
        (
            dataclasses.replace(sthv2, num_classes=400),
            "video_swin_base_patch244_window1677_kinetics400_22k",
            {"drop_path_rate": 0.4},  # sthv2's; the head now is the Kinetics-400 release's
        ),
        # 10 classes match no head: the first registered of the architecture
        (
            dataclasses.replace(sthv2, num_classes=10),
            "video_swin_base_patch244_window1677_sthv2",
            {"num_classes": 10},
        ),
        # Swin-B, window 16, depths changed: the window-16 releases are 1 field away, Swin-B 2
        (
            dataclasses.replace(sthv2, depths=(2, 2, 6, 2)),
            "video_swin_base_patch244_window1677_sthv2",
            {"depths": (2, 2, 6, 2)},
        ),
        # Swin-T's architecture with 600 classes: video_swin_tiny, registered first
        (
            dataclasses.replace(VARIANTS["video_swin_tiny"].config, num_classes=600),
            "video_swin_tiny",
            {"num_classes": 600},
        ),
    ]
    for config, name, overrides in cases:
        assert nearest_variant(config) == (name, overrides), config
        assert resolve(name, **overrides) == config
        assert match_variant(config) == (name if "depths" not in overrides else None)


def test_create_model_refuses_unknown_names_in_one_line():
    """``create_model(None)`` / an unknown name / another type: one line naming the known
    variants (the same ``resolve`` serves Keras and Flax: test_keras_models, test_flax_models)."""
    for bad, what in [
        (None, "unknown variant None"),
        ("video_swin_tinyy", "unknown variant 'video_swin_tinyy'"),
        ({"embed_dim": 96}, "neither a variant name nor a config: dict"),
    ]:
        with pytest.raises(UnknownVariantError) as e:
            create_model(bad)
        message = str(e.value)
        assert message.startswith(what) and "\n" not in message
        assert "known variants: " in message and "video_swin_tiny, " in message
        assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)


#: releases detection names by a short variant registered before them, which has their
#: architecture and head (the file cannot tell them apart: a note names the release); every
#: other release is named itself
ALIKE = {
    "swin_tiny_patch244_window877_kinetics400_1k": "video_swin_tiny",
    "swin_small_patch244_window877_kinetics400_1k": "video_swin_small",
    "swin_base_patch244_window877_kinetics400_1k": "video_swin_base",
    "swin_base_patch244_window877_kinetics400_22k": "video_swin_base",
}


_T, _B = (96, (2, 2, 6, 2), (3, 6, 12, 24)), (128, (2, 2, 18, 2), (4, 8, 16, 32))
#: configs/recognition/swin/<stem>.py of SwinTransformer/Video-Swin-Transformer (and its
#: _base_/models/swin/*.py): embed_dim, depths, num_heads, window_size, num_classes; patch 2x4x4
OFFICIAL = {
    "swin_tiny_patch244_window877_kinetics400_1k": (*_T, (8, 7, 7), 400),
    "swin_small_patch244_window877_kinetics400_1k": (96, (2, 2, 18, 2), _T[2], (8, 7, 7), 400),
    "swin_base_patch244_window877_kinetics400_1k": (*_B, (8, 7, 7), 400),
    "swin_base_patch244_window877_kinetics400_22k": (*_B, (8, 7, 7), 400),
    "swin_base_patch244_window877_kinetics600_22k": (*_B, (8, 7, 7), 600),
    "swin_base_patch244_window1677_sthv2": (*_B, (16, 7, 7), 174),
    "swin_base_patch244_window1677_kinetics400_22k": (*_B, (16, 7, 7), 400),
}


@pytest.mark.parametrize("stem", list(RELEASES))
def test_video_swin_releases_are_named(stem):
    """Each Video-Swin-Transformer release, in its official layout (with the index buffers)
    and as bare tables (no index: the window from the bias-table rows alone), is named by
    ``detect`` / ``describe``: window, classes and variant. Zero-stride arrays: shapes only."""
    release = VARIANTS[f"video_{stem}"].config
    fields = ("embed_dim", "depths", "num_heads", "window_size", "num_classes")
    assert tuple(getattr(release, f) for f in fields) == OFFICIAL[stem]
    assert release.patch_size == (2, 4, 4)
    named = ALIKE.get(stem, f"video_{stem}")
    reference = {k: np.broadcast_to(np.float32(0), s) for k, s in reference_shapes(release).items()}
    official = layouts.from_reference(reference, "official", "video_swin", release)
    rows = {8: 15 * 13 * 13, 16: 31 * 13 * 13}[release.window_size[0]]  # 2535, 5239
    assert official["backbone.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0] == rows
    tokens = {8: 392, 16: 784}[release.window_size[0]]
    assert official["backbone.layers.0.blocks.0.attn.relative_position_index"].shape == (
        tokens,
        tokens,
    )
    for sd, note in [(official, "derived buffer(s) checked"), (reference, "solved from the bias")]:
        detected = layouts.detect(sd)
        info = layouts.describe(detected, sd)
        assert (info["layout"], info["variant"], info["nearest_variant"]) == (
            "official",
            named,
            named,
        )
        assert info["overrides"] == {}
        assert detected.config == VARIANTS[named].config
        assert detected.config.window_size == release.window_size
        assert detected.config.num_classes == release.num_classes
        assert any(note in n for n in info["notes"]), info["notes"]
        if named != f"video_{stem}":  # alike: the release is named in a note
            assert any(f"video_{stem}" in n and "cannot tell" in n for n in info["notes"])
        else:
            assert not any("cannot tell" in n for n in info["notes"])


def test_variant_with_other_head_and_window12():
    ref = {
        k: v.numpy()
        for k, v in create_model("swin_base_patch4_window12_384", num_classes=21841)
        .state_dict()
        .items()
    }
    sd = layouts.from_reference(ref, "timm", "swin")
    detected = layouts.detect(sd)
    assert detected.variant == "swin_base_patch4_window12_384"
    assert detected.overrides() == {"num_classes": 21841}
    assert detected.config.img_size == 384


def _small_video(window):
    model = create_model("video_swin_tiny", window_size=window, depths=(1, 1), num_heads=(3, 6))
    return {k: v.numpy() for k, v in model.state_dict().items()}, model.config


def test_3d_window_from_table_only():
    """Without relative_position_index the 3D window is solved from the table rows; the official
    (8, 7, 7) is preferred over the degenerate alternatives, a custom one is refused when the rows
    fit several windows and accepted when they fit one."""
    ref = {k: v.numpy() for k, v in create_model("video_swin_tiny").state_dict().items()}
    detected = layouts.detect(ref)
    assert detected.config.window_size == (8, 7, 7)
    assert any("solved from the bias-table rows" in n for n in detected.notes)
    # (4, 7, 7): 7 * 13 * 13 rows fit no other window with h = w >= 2 -> accepted.
    assert layouts.detect(_small_video((4, 7, 7))[0]).config.window_size == (4, 7, 7)
    # (2, 5, 5) has 3 * 81 = 243 rows = 27 * 9 too: (14, 2, 2) -> ambiguous.
    ref2, config2 = _small_video((2, 5, 5))
    with pytest.raises(LayoutError, match="cannot tell the 3D window"):
        layouts.detect(ref2)
    # With the index buffers (official layout) the window is known.
    sd2 = layouts.from_reference(ref2, "official", "video_swin", config2)
    assert layouts.detect(sd2).config.window_size == (2, 5, 5)


@pytest.mark.parametrize(
    "name",
    [
        "swin_small_patch4_window12_384",
        "video_swin_base",
        "sam_vit_b",
        "sam_vit_h",
        "samvit_large_patch16",
        "vitdet_base",
        "vitdet_huge",
    ],
)
def test_reference_shapes_match_models(name):
    """The family's key / shape table (framework-free) lists the reference model's state dict
    exactly, in order, for every variant."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = create_model(name)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert reference_shapes(model.config) == shapes
    assert list(reference_shapes(model.config)) == list(shapes)


#: every family's tiny config, for the table checks
SMALL = {name: family.tiny for name, family in FAMILIES.items()}


def test_key_rules_are_inverse():
    assert {spec.family for spec in layouts.all_layouts()} == set(SMALL)
    for spec in layouts.all_layouts():
        config = SMALL[spec.family]
        if spec.label == "mmdetection/swin":  # a detector's backbone: no classifier
            config = factory.mmdet_backbone(config)
        shapes = reference_shapes(config)
        sd = layouts.from_reference(
            {k: np.zeros(s, np.float32) for k, s in shapes.items()}, spec.name, spec.family
        )
        assert len(sd) >= len(shapes)
        for key in spec.view(sd):  # the names the key rules see (tensor rules applied)
            assert spec.layout_key(spec.reference_key(key)) == key


@pytest.mark.parametrize("family", ["sam", "sam_image_encoder", "vitdet"])
def test_vit_families_detect_their_config(family):
    """Every field of a custom SAM / ViTDet architecture is solved from the shapes, and the
    registered variants are named, in each of the family's layouts."""
    configs = [SMALL[family], *(v.config for v in VARIANTS.values() if v.config.family == family)]
    for config in configs:
        shapes = reference_shapes(config)
        zeros = {k: np.zeros(s, np.float32) for k, s in shapes.items()}  # ViT-H: 2.5 GB, once
        for layout in layouts.family_layouts(family):
            sd = layouts.from_reference(zeros, layout, family, config)
            detected = layouts.detect(sd)
            assert (detected.layout, detected.family) == (layout, family)
            assert detected.config == config
            assert list(layouts.to_reference(sd, detected)) == list(shapes)


def test_detectron2_heads_are_dropped_and_counted():
    config = SMALL["vitdet"]
    shapes = reference_shapes(config)
    sd = layouts.from_reference(
        {k: np.zeros(s, np.float32) for k, s in shapes.items()}, "detectron2", "vitdet"
    )
    sd["roi_heads.box_predictor.cls_score.weight"] = np.zeros((81, 1024), np.float32)
    sd["proposal_generator.rpn_head.conv.weight"] = np.zeros((256, 256, 3, 3), np.float32)
    sd["pixel_mean"] = np.zeros((3, 1, 1), np.float32)
    detected = layouts.detect(sd)
    assert detected.family == "vitdet"
    assert any("3 tensor(s) outside the model dropped" in n for n in detected.notes)
    assert set(layouts.to_reference(sd, detected)) == set(shapes)


# --------------------------------------------------------------------------- checkpoints.py


def test_checkpoint_wrappers_and_prefix(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    torch.save(
        {
            "epoch": 3,
            "model": {"module": {"module.x.weight": torch.from_numpy(a)}},
            "optimizer": {},
        },
        tmp_path / "w.pth",
    )
    sd, info = load_state_dict(tmp_path / "w.pth")
    assert list(sd) == ["x.weight"]
    np.testing.assert_array_equal(sd["x.weight"], a)
    assert info["wrapper"] == "model/module"
    assert info["stripped_prefix"] == "module."
    assert "epoch" in info["ignored"] and "optimizer" in info["ignored"]


def test_a_layout_declares_its_wrapper_key(tmp_path, monkeypatch):
    """A family whose releases nest the weights under another key ("ema") declares it in its
    layouts module (``LayoutSpec.wrapper``) and its ``.pth`` files are read: no list to edit."""
    import dataclasses

    from weight_convert import checkpoints

    spec = dataclasses.replace(layouts.all_layouts()[0], wrapper="ema")
    torch.save({"ema": {"x.weight": torch.ones(2)}, "step": 1}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="no tensors"):  # not a known wrapper yet
        load_state_dict(tmp_path / "w.pth")
    monkeypatch.setattr(layouts, "all_layouts", lambda: [spec])
    assert checkpoints.wrapper_keys()[-1] == "ema"
    sd, info = load_state_dict(tmp_path / "w.pth")
    assert list(sd) == ["x.weight"] and info["wrapper"] == "ema"


def test_checkpoint_bf16_and_safetensors(tmp_path):
    """Every dtype is read as it is: bfloat16 as ml_dtypes.bfloat16, bit for bit."""
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_torch

    from weight_convert.tensors import BFLOAT16

    x = torch.randn(3, 4).to(torch.bfloat16)
    bits = x.view(torch.int16).numpy()
    torch.save({"a": x, "b": torch.ones(2)}, tmp_path / "bf.pt")
    sd, info = load_state_dict(tmp_path / "bf.pt")
    assert info["format"] == "torch" and sd["a"].dtype == BFLOAT16 and sd["b"].dtype == np.float32
    np.testing.assert_array_equal(sd["a"].view(np.int16), bits)

    save_file({"w": np.arange(4, dtype=np.float16)}, str(tmp_path / "f.safetensors"))
    sd, info = load_state_dict(tmp_path / "f.safetensors")
    assert info["format"] == "safetensors" and sd["w"].dtype == np.float16

    save_torch({"a": x, "i": torch.arange(5)}, str(tmp_path / "bf.safetensors"))
    sd, info = load_state_dict(tmp_path / "bf.safetensors")
    assert sd["a"].dtype == BFLOAT16
    np.testing.assert_array_equal(sd["a"].view(np.int16), bits)
    np.testing.assert_array_equal(sd["i"], np.arange(5))


def test_checkpoint_errors(tmp_path):
    """One error class per kind of bad file (the CLI table in test_bad_inputs covers the rest)."""
    from weight_convert import errors

    with pytest.raises(errors.MissingFileError, match="no checkpoint file"):
        load_state_dict(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(errors.NotACheckpointError, match="not a checkpoint"):
        load_state_dict(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x01")
    with pytest.raises(errors.NotACheckpointError):
        load_state_dict(tmp_path / "junk.safetensors")
    torch.save({"meta": {"x": 1}, "epoch": 2}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no tensors.*meta") as e:
        load_state_dict(tmp_path / "empty.pth")
    assert "\n" not in str(e.value)


def test_relative_position_index_table_is_reference():
    """The buffers from_reference writes are zoo.windows' table (the one the models use)."""
    sd = layouts.from_reference(
        {k: v.numpy() for k, v in create_model("video_swin_tiny").state_dict().items()},
        "official",
        "video_swin",
    )
    np.testing.assert_array_equal(
        sd["backbone.layers.0.blocks.0.attn.relative_position_index"],
        relative_position_index((8, 7, 7)),
    )

"""mmdetection / mmsegmentation Swin backbones (layout ``mmdetection``) against mmdetection's own
code, transcribed here from the sources (mmdetection is not installable here: it needs mmcv):

- the converter: ``swin_converter`` of ``mmdet/models/utils/ckpt_convert.py``
  (https://github.com/open-mmlab/mmdetection/blob/1035f6ea5371845a21d50d37b5dd4f0cd434ce33/mmdet/models/utils/ckpt_convert.py;
  ``tools/model_converters/swin2mmdet.py`` calls it, mmsegmentation's ``swin2mmseg.py`` is the
  same code) in ``_swin_converter``;
- the forward: ``SwinTransformer`` / ``ShiftWindowMSA`` / ``WindowMSA`` / ``SwinBlock`` of
  ``mmdet/models/backbones/swin.py``
  (https://github.com/open-mmlab/mmdetection/blob/09269cfeb8d6f61e1e7c3155bf57a9a798493e7b/mmdet/models/backbones/swin.py)
  and ``PatchEmbed`` / ``PatchMerging`` (``nn.Unfold``) of
  ``mmdet/models/layers/transformer/utils.py``
  (https://github.com/open-mmlab/mmdetection/blob/013e5419cb60fb12003b55535ee76c31b9248249/mmdet/models/layers/transformer/utils.py)
  in ``_mmdet_forward``, which reads the checkpoint's tensors under their mmdetection names:
  ``nn.Unfold`` itself is the authority for the patch-merging channel order.

Conversion to Keras / Flax and back bit-exact: the shared suite's round trip
(``families/test_swin.py``, maker ``checkpoint_factory.mmdetection_swin``) and ``test_cli_verify``
here; the new config fields in the ports: the suite's ``mmdet-30x27`` parity case.
"""

from __future__ import annotations

import dataclasses

import checkpoint_factory as factory
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weight_convert import checkpoints, layouts
from weight_convert.frameworks.reference import randomize_
from weight_convert.tensors import load
from weight_convert.tolerance import MODEL_TOLERANCE
from zoo.config_checks import ConfigError
from zoo.configs import config_from_dict, config_to_dict, reference_shapes, validate
from zoo.families.swin import SwinConfig
from zoo.models import build_model

#: three stages so the last map (3 x 5 at 45 x 70) fits one 7 x 7 window, where mmdetection
#: still shifts; stage 1's 6 x 9 map is padded by the patch merging
BASE = SwinConfig(embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=(7, 7))
CONFIGS = {
    "subset": factory.mmdet_backbone(BASE, out_indices=(1, 2)),
    "no-norms-no-bias": factory.mmdet_backbone(
        dataclasses.replace(BASE, patch_norm=False, merge_norm=False, qkv_bias=False)
    ),
}
SHAPE = (2, 3, 45, 70)


# --------------------------------------------------------------------------- mmdetection's code


def _swin_converter(ckpt: dict[str, np.ndarray], prefix: str = "") -> dict[str, np.ndarray]:
    """mmdetection's ``swin_converter`` (official keys -> theirs), NumPy for torch, the output
    keys prefixed by ``prefix`` (mmdetection 2.x's copy in ``backbones/swin.py`` writes
    ``backbone.``; ``ckpt_convert.py`` and ``swin2mmseg.py`` write none)."""

    def correct_unfold_reduction_order(x):
        out_channel, in_channel = x.shape
        x = x.reshape(out_channel, 4, in_channel // 4)
        return x[:, [0, 2, 1, 3], :].transpose(0, 2, 1).reshape(out_channel, in_channel)

    def correct_unfold_norm_order(x):
        in_channel = x.shape[0]
        x = x.reshape(4, in_channel // 4)
        return x[[0, 2, 1, 3], :].transpose(1, 0).reshape(in_channel)

    new_ckpt = {}
    for k, v in ckpt.items():
        if k.startswith("head"):
            continue
        elif k.startswith("layers"):
            new_v = v
            if "attn." in k:
                new_k = k.replace("attn.", "attn.w_msa.")
            elif "mlp." in k:
                if "mlp.fc1." in k:
                    new_k = k.replace("mlp.fc1.", "ffn.layers.0.0.")
                elif "mlp.fc2." in k:
                    new_k = k.replace("mlp.fc2.", "ffn.layers.1.")
                else:
                    new_k = k.replace("mlp.", "ffn.")
            elif "downsample" in k:
                new_k = k
                if "reduction." in k:
                    new_v = correct_unfold_reduction_order(v)
                elif "norm." in k:
                    new_v = correct_unfold_norm_order(v)
            else:
                new_k = k
            new_k = new_k.replace("layers", "stages", 1)
        elif k.startswith("patch_embed"):
            new_v = v
            new_k = k.replace("proj", "projection") if "proj" in k else k
        else:
            new_v, new_k = v, k
        new_ckpt[prefix + new_k] = new_v
    return new_ckpt


def _mmdet_relative_position_index(w: int) -> torch.Tensor:
    """``WindowMSA.__init__``'s buffer (``double_step_seq``, flipped), for a w x w window."""
    seq1 = torch.arange(0, (2 * w - 1) * w, 2 * w - 1)
    seq2 = torch.arange(0, w, 1)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


def _partition(x: torch.Tensor, w: int) -> torch.Tensor:
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(-1, w, w, c)


def _reverse(windows: torch.Tensor, h: int, wd: int, w: int) -> torch.Tensor:
    b = int(windows.shape[0] / (h * wd / w / w))
    x = windows.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(b, h, wd, -1)


def _shift_window_msa(t, p: str, query, hw, heads: int, w: int, shifted: bool):
    """``ShiftWindowMSA.forward`` with ``WindowMSA.forward``; ``t(name)`` is a tensor of the
    checkpoint, ``p`` the ``attn.w_msa.`` prefix."""
    b, _, c = query.shape
    h, wd = hw
    query = query.view(b, h, wd, c)
    pad_r, pad_b = (w - wd % w) % w, (w - h % w) % w
    query = F.pad(query, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = query.shape[1], query.shape[2]
    s = w // 2 if shifted else 0
    mask = None
    if s > 0:
        query = torch.roll(query, shifts=(-s, -s), dims=(1, 2))
        img_mask = torch.zeros((1, hp, wp, 1))
        slices = (slice(0, -w), slice(-w, -s), slice(-s, None))
        cnt = 0
        for hs in slices:
            for ws in slices:
                img_mask[:, hs, ws, :] = cnt
                cnt += 1
        mask_windows = _partition(img_mask, w).view(-1, w * w)
        mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    x = _partition(query, w).view(-1, w * w, c)
    # WindowMSA
    bw, n, _ = x.shape
    bias = t(p + "qkv.bias") if p + "qkv.bias" in t.keys else None
    qkv = F.linear(x, t(p + "qkv.weight"), bias).reshape(bw, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    index = _mmdet_relative_position_index(w)
    table = t(p + "relative_position_bias_table")
    attn = attn + table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(bw // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
    x = F.linear(x, t(p + "proj.weight"), t(p + "proj.bias"))
    x = _reverse(x.view(-1, w, w, c), hp, wp, w)
    if s > 0:
        x = torch.roll(x, shifts=(s, s), dims=(1, 2))
    return x[:, :h, :wd, :].contiguous().view(b, h * wd, c)


class _Tensors:
    """The checkpoint's tensors by mmdetection name, as float32 torch tensors."""

    def __init__(self, sd) -> None:
        self.sd, self.keys = sd, set(sd)

    def __call__(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(load(self.sd[name])))


@torch.no_grad()
def _mmdet_forward(sd, config: SwinConfig, x: torch.Tensor) -> list[torch.Tensor]:
    """mmdetection's ``SwinTransformer.forward`` on the checkpoint's tensors (``backbone.*``):
    the maps of ``config.out_indices``, each through ``norm{i}``, channels-last (B, H, W, C)."""
    t, pre = _Tensors(sd), "backbone."

    def norm(y, name):
        return F.layer_norm(y, y.shape[-1:], t(name + ".weight"), t(name + ".bias"), 1e-5)

    # PatchEmbed: AdaptivePadding("corner"), conv, flatten, norm
    ph, pw = config.patch_size
    x = F.pad(x, (0, -x.shape[3] % pw, 0, -x.shape[2] % ph))
    proj = pre + "patch_embed.projection."
    x = F.conv2d(x, t(proj + "weight"), t(proj + "bias"), stride=config.patch_size)
    hw = (x.shape[2], x.shape[3])
    x = x.flatten(2).transpose(1, 2)
    if config.patch_norm:
        x = norm(x, pre + "patch_embed.norm")
    outs = []
    w = config.window_size[0]
    for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
        stage = f"{pre}stages.{i}."
        for j in range(depth):  # SwinBlock
            b = f"{stage}blocks.{j}."
            y = norm(x, b + "norm1")
            x = x + _shift_window_msa(t, b + "attn.w_msa.", y, hw, heads, w, j % 2 == 1)
            y = F.gelu(F.linear(norm(x, b + "norm2"), *_linear(t, b + "ffn.layers.0.0")))
            x = x + F.linear(y, *_linear(t, b + "ffn.layers.1"))
        out, out_hw = x, hw
        if i < len(config.depths) - 1:  # PatchMerging with nn.Unfold
            bsz, _, c = x.shape
            y = x.view(bsz, *hw, c).permute(0, 3, 1, 2)
            y = F.pad(y, (0, hw[1] % 2, 0, hw[0] % 2))  # AdaptivePadding("corner"), 2 x 2
            y = torch.nn.Unfold(kernel_size=2, stride=2)(y).transpose(1, 2)
            hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
            if f"{stage}downsample.norm.weight" in t.keys:
                y = norm(y, f"{stage}downsample.norm")
            x = F.linear(y, t(f"{stage}downsample.reduction.weight"))
        if i in config.out_indices:
            outs.append(norm(out, f"{pre}norm{i}").view(-1, *out_hw, out.shape[-1]))
    return outs


def _linear(t, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return t(name + ".weight"), t(name + ".bias")


# --------------------------------------------------------------------------- helpers


def _input() -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(3))


@torch.no_grad()
def _reference_features(sd, detected) -> list[torch.Tensor]:
    """The reference built from the detected config, loaded strictly from the checkpoint."""
    model = build_model(detected.config).eval()
    reference = layouts.to_reference(sd, detected)
    model.load_state_dict({k: torch.from_numpy(np.array(load(v))) for k, v in reference.items()})
    return model(_input())


def _errors(ours, theirs) -> list[tuple[float, float]]:
    """(max abs difference, MODEL_TOLERANCE bound) per output."""
    assert [tuple(a.shape) for a in ours] == [tuple(b.shape) for b in theirs]
    return [
        ((a - b).abs().max().item(), MODEL_TOLERANCE.bound(b.numpy()))
        for a, b in zip(ours, theirs, strict=True)
    ]


_FILES: dict[str, tuple[str, str, list[torch.Tensor]]] = {}


def _mmdet_file(name: str, tmp_path_factory) -> tuple[str, str, list[torch.Tensor]]:
    """(name, path, mmdetection's features) of a random detector checkpoint of ``CONFIGS[name]``,
    made once per module."""
    if name not in _FILES:
        path = tmp_path_factory.mktemp("mmdet") / f"{name}.pth"
        factory.mmdetection_swin(path, CONFIGS[name], seed=5)
        sd, _ = checkpoints.load_state_dict(str(path))
        _FILES[name] = (name, str(path), _mmdet_forward(sd, CONFIGS[name], _input()))
    return _FILES[name]


@pytest.fixture(scope="module", autouse=True)
def _clear_files():
    yield
    _FILES.clear()


@pytest.fixture(scope="module", params=list(CONFIGS))
def mmdet_file(request, tmp_path_factory):
    return _mmdet_file(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def subset_file(tmp_path_factory):
    return _mmdet_file("subset", tmp_path_factory)


# --------------------------------------------------------------------------- tests


def test_converter_output_reads_back():
    """What mmdetection's converter makes of an official checkpoint (buffers and all, with or
    without the ``backbone.`` prefix) is read as the official weights, bit for bit, and the
    reference's weights are written with the converter's channel order."""
    config = dataclasses.replace(BASE, num_classes=7)
    model = randomize_(build_model(config), 4)
    ref = {k: v.numpy() for k, v in model.state_dict().items()}
    official = layouts.from_reference(ref, "official", "swin", config)
    assert any(k.endswith("attn_mask") for k in official)  # the converter carries them over
    backbone = {k: v for k, v in ref.items() if not k.startswith("head.")}
    for prefix in ("", "backbone."):
        converted = _swin_converter({k: np.asarray(v) for k, v in official.items()}, prefix)
        detected = layouts.detect(converted)
        assert (detected.layout, detected.family) == ("mmdetection", "swin")
        assert detected.config.features_only and detected.config.out_indices == ()
        assert detected.config.window_rule == "pad"  # official weights, official blocks
        back = layouts.to_reference(converted, detected)
        assert list(back) == list(backbone)
        for key, value in backbone.items():
            assert np.array_equal(load(back[key]), value), key
    written = layouts.from_reference(
        backbone, "mmdetection", "swin", dataclasses.replace(config, features_only=True)
    )
    converted = _swin_converter(official, "backbone.")
    merging = [k for k in written if ".downsample." in k]
    assert len(merging) == 6  # two stages' reduction.weight, norm.weight, norm.bias
    for key in merging:  # the converter's permutation, bit for bit, and no identity
        assert np.array_equal(load(written[key]), converted[key]), key
        official_key = key.replace("backbone.stages.", "layers.")
        assert not np.array_equal(converted[key], official[official_key]), key


def test_detected(mmdet_file):
    """A detector checkpoint ({'meta', 'state_dict', 'optimizer'}) is mmdetection/swin: the
    backbone's config solved, the detector's other tensors dropped and counted, mmdetection's
    relative_position_index buffers checked against its own formula."""
    name, path, _ = mmdet_file
    sd, info = checkpoints.load_state_dict(path)
    assert info["wrapper"] == "state_dict"
    detected = layouts.detect(sd)
    assert (detected.layout, detected.family) == ("mmdetection", "swin")
    arch = ("depths", "num_heads", "embed_dim", "window_size", "patch_norm", "merge_norm")
    want = CONFIGS[name]
    for field in (*arch, "qkv_bias", "out_indices", "features_only", "window_rule"):
        assert getattr(detected.config, field) == getattr(want, field), field
    n = len(factory.MMDET_HEADS)
    assert f"{n} tensor(s) outside the model dropped: neck (2), rpn_head (2), roi_head (2)" in (
        detected.notes
    )
    index = _mmdet_relative_position_index(7).numpy()
    stored = [k for k in sd if k.endswith("attn.w_msa.relative_position_index")]
    assert len(stored) == sum(want.depths)
    assert all(np.array_equal(load(sd[k]), index) for k in stored)


def test_features_match_mmdetection(mmdet_file):
    """The reference loaded from the checkpoint gives mmdetection's features (its forward on
    the stored tensors, nn.Unfold patch merging, norm{i} per output) within 1e-4 x std."""
    name, path, theirs = mmdet_file
    sd, _ = checkpoints.load_state_dict(path)
    errors = _errors(_reference_features(sd, layouts.detect(sd)), theirs)
    assert len(errors) == len(CONFIGS[name].out_indices)
    assert all(err <= bound for err, bound in errors), errors


def _transpose_only(x):
    *lead, n = x.shape
    return np.ascontiguousarray(np.swapaxes(x.reshape(*lead, n // 4, 4), -1, -2)).reshape(x.shape)


def _swap_only(x):
    *lead, n = x.shape
    return np.ascontiguousarray(x.reshape(*lead, 4, n // 4)[..., [0, 2, 1, 3], :]).reshape(x.shape)


@pytest.mark.parametrize("bug", ["no-permutation", "transpose-only", "swap-only", "pad-rule"])
def test_planted_bugs_fail(bug, subset_file, monkeypatch):
    """The comparison above fails, by far, when the layout reads the patch merging without its
    permutation or with half of it, or when the blocks stop shifting where one window covers
    the map (the official "pad" rule): each of the checks can fail."""
    _, path, theirs = subset_file
    record = layouts.FAMILY_LAYOUTS["swin"]
    maps = {"no-permutation": None, "transpose-only": _transpose_only, "swap-only": _swap_only}
    if bug in maps:
        fn = maps[bug]
        value_maps = (
            ()
            if fn is None
            else tuple(
                dataclasses.replace(vm, read=fn)
                for vm in layouts.layout_spec("mmdetection", "swin").value_maps
            )
        )
        specs = tuple(
            dataclasses.replace(s, value_maps=value_maps) if s.name == "mmdetection" else s
            for s in record.layouts
        )
        monkeypatch.setitem(
            layouts.FAMILY_LAYOUTS._loaded(), "swin", dataclasses.replace(record, layouts=specs)
        )
    sd, _ = checkpoints.load_state_dict(path)
    detected = layouts.detect(sd)
    if bug == "pad-rule":
        detected.config = dataclasses.replace(detected.config, window_rule="pad")
    errors = _errors(_reference_features(sd, detected), theirs)
    # the stage after a merging (or the shifted stage) is off by far more than the bound
    assert max(err / bound for err, bound in errors) > 100, errors


def test_config_fields():
    """out_indices / merge_norm: the shape table lists the reference's state dict in order,
    the config survives JSON, and impossible values are refused naming the field."""
    for config in CONFIGS.values():
        model = build_model(config)
        assert list(reference_shapes(config).items()) == [
            (k, tuple(v.shape)) for k, v in model.state_dict().items()
        ]
        assert config_from_dict(config_to_dict(config)) == config
    keys = list(reference_shapes(CONFIGS["subset"]))
    assert [k for k in keys if k.startswith("norm")][::2] == ["norm1.weight", "norm2.weight"]
    bad = [
        dict(out_indices=(0,), features_only=False),
        dict(out_indices=(3,), features_only=True),
        dict(out_indices=(1, 0), features_only=True),
        dict(out_indices=(1, 1), features_only=True),
    ]
    for fields in bad:
        with pytest.raises(ConfigError, match="config field out_indices"):
            validate(dataclasses.replace(BASE, **fields))


@pytest.mark.slow  # CI time: the suite's round trip and parity cases cover it without --verify
def test_cli_verify(tmp_path, capsys):
    """``weight-convert convert --verify`` of an mmdetection checkpoint to Flax: every layer of
    the Flax model against the reference, at a size where both stage maps fit one window (7 x 7
    and 4 x 4: the shift kept by pad_shift). (Keras, and back to the mmdetection layout bit
    for bit: the suite's round trip; the ports on the new fields: its mmdet-30x27 case.)"""
    from weight_convert import cli

    source = str(tmp_path / "det.pth")
    tiny = SwinConfig(embed_dim=16, depths=(2, 2), num_heads=(1, 2))
    factory.mmdetection_swin(source, factory.mmdet_backbone(tiny), seed=6)
    args = ["convert", source, "--to", "flax", "-o", str(tmp_path / "m")]
    assert cli.main([*args, "--verify", "--verify-shape", "1x3x28x28"]) == 0
    printed = capsys.readouterr().out
    assert "layout:   mmdetection" in printed and ": PASS" in printed

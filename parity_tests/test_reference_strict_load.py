"""The reference loads the official checkpoints, and the converter's own PyTorch output in the
official layout, with ``load_state_dict(strict=True)`` and nothing done by the user.

The official Swin releases carry buffers the window defines (``relative_position_index`` in
every block, ``attn_mask`` in the 2D shifted blocks at the training resolution); the reference
derives them, keeps them out of ``state_dict()``, and on loading checks each against the window
(``zoo.windows.check_window_buffer``, the rule the converter applies too) and drops it. A wrong
one is an error of ``load_state_dict``; any other unknown key stays unexpected.

Files come from ``checkpoint_factory`` (the official 2D / 3D Swin layouts built from the reference
and wrapped as the releases are; SAM from ``segment-anything``'s own ``Sam``; torchvision from
torchvision's own models), on the families' tiny configs. Equality is bit-exact: the same weights
give the same outputs.
"""

from __future__ import annotations

import checkpoint_factory as factory
import numpy as np
import pytest
import torch

from weight_convert import convert
from zoo.models import build_model
from zoo.registry import FAMILIES
from zoo.windows import WINDOW_BUFFERS, check_window_buffer, relative_position_index

#: family -> (first-input shape for the output check: small, shifted windows on padded maps;
#: None: the tiny config's default)
SHAPES = {"swin": (1, 3, 36, 28), "video_swin": (1, 3, 3, 36, 28), "sam": None}


def _official(family: str, path) -> tuple[str, dict[str, np.ndarray]]:
    """An official release of ``family``'s tiny config: (file, the same weights in the
    reference's keys)."""
    config = FAMILIES[family].tiny
    if family == "sam":
        return factory.official_sam(path, config, seed=3)
    make = factory.official_swin2d if family == "swin" else factory.official_video_swin
    fields = {f: getattr(config, f) for f in ("embed_dim", "depths", "num_heads", "num_classes")}
    return make(path, seed=3, **fields)


def _converted(family: str, tmp_path) -> tuple[str, dict[str, np.ndarray]]:
    """The converter's PyTorch output in the family's official layout, converted from another
    layout where the family has one (torchvision: the converter makes the derived buffers
    itself), else from the official file."""
    if family == "sam":
        source, reference = _official(family, tmp_path / "source.pth")
    else:
        source, reference = factory.torchvision_swin(tmp_path / "tv.pth", FAMILIES[family].tiny, 4)
    out = tmp_path / "official.pth"
    summary, _ = convert.convert(source, "torch", out, layout="official")
    assert summary.layout == "official"
    return str(out), reference


def _state_dict(path: str) -> dict[str, torch.Tensor]:
    """``torch.load`` of a release, unwrapped as the official code unwraps it."""
    obj = torch.load(path, weights_only=True)
    for wrapper in ("model", "state_dict"):
        if wrapper in obj and isinstance(obj[wrapper], dict):
            return obj[wrapper]
    return obj


def _outputs(model: torch.nn.Module, family: str) -> list[torch.Tensor]:
    xs, _ = FAMILIES[family].make_inputs(model.config, SHAPES[family], seed=5)
    with torch.no_grad():
        out = model(*[torch.from_numpy(x) for x in xs])
    return list(out) if isinstance(out, list | tuple) else [out]


def _derived(sd) -> list[str]:
    return [k for k in sd if k.rsplit(".", 1)[-1] in WINDOW_BUFFERS]


#: (family, source) -> derived buffers the file must carry (else the test proves nothing)
CASES = {
    ("swin", "official"): {"relative_position_index", "attn_mask"},
    ("swin", "converter"): {"relative_position_index", "attn_mask"},
    ("video_swin", "official"): {"relative_position_index"},
    ("video_swin", "converter"): {"relative_position_index"},
    ("sam", "official"): set(),
    ("sam", "converter"): set(),
}


@pytest.mark.parametrize("family,source", list(CASES), ids=[f"{f}-{s}" for f, s in CASES])
def test_official_file_loads_strictly(family, source, tmp_path):
    """``load_state_dict(strict=True)`` of the file's state dict succeeds (nothing missing or
    unexpected, the derived buffers dropped), and the model equals, bit for bit in its state
    dict and outputs, the model loaded from the same weights in the reference's keys."""
    if source == "official":
        path, reference = _official(family, tmp_path / "release.pth")
    else:
        path, reference = _converted(family, tmp_path)
    sd = _state_dict(path)
    assert {k.rsplit(".", 1)[-1] for k in _derived(sd)} == CASES[family, source]

    config = FAMILIES[family].tiny
    loaded = build_model(config).eval()
    result = loaded.load_state_dict(sd, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(sd) == len(reference) + len(_derived(sd)), "the caller's dict was changed"

    plain = build_model(config).eval()
    plain.load_state_dict({k: torch.from_numpy(v) for k, v in reference.items()}, strict=True)
    ours, want = loaded.state_dict(), plain.state_dict()
    assert list(ours) == list(want) and not _derived(ours)  # state_dict() as it was
    for key in want:
        assert torch.equal(ours[key], want[key]), key
    for got, expected in zip(_outputs(loaded, family), _outputs(plain, family), strict=True):
        assert torch.equal(got, expected)


@pytest.fixture(scope="module")
def swin_releases(tmp_path_factory):
    """family -> state dict of its official tiny release (the Swin families)."""
    root = tmp_path_factory.mktemp("releases")
    return {f: _state_dict(_official(f, root / f"{f}.pth")[0]) for f in ("swin", "video_swin")}


def _corrupt_index(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[0, 1] += 1
    return t


#: (family, key, replacement, message regex)
WRONG = [
    (
        "swin",
        "layers.1.blocks.0.attn.relative_position_index",
        _corrupt_index,
        r"layers\.1\.blocks\.0\.attn\.relative_position_index \(shape \(49, 49\)\) is not the "
        r"relative position index of window \(7, 7\)",
    ),
    (
        "swin",
        "layers.0.blocks.1.attn.relative_position_index",
        lambda t: t.T.reshape(-1).clone(),  # torchvision's flat form, transposed window
        r"blocks\.1\.attn\.relative_position_index \(shape \(2401,\)\) is not the relative",
    ),
    (
        "swin",
        "layers.0.blocks.1.attn_mask",
        lambda t: t[:, :48, :48].clone(),
        r"layers\.0\.blocks\.1\.attn_mask has shape \(64, 48, 48\); window \(7, 7\) needs "
        r"\(\.\.\., 49, 49\)",
    ),
    (
        "video_swin",
        "backbone.layers.0.blocks.1.attn.relative_position_index",
        _corrupt_index,
        r"backbone\.layers\.0\.blocks\.1\.attn\.relative_position_index \(shape \(392, 392\)\) "
        r"is not the relative position index of window \(8, 7, 7\)",
    ),
]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not-strict"])
@pytest.mark.parametrize("family,key,replace,message", WRONG, ids=["index", "flat", "mask", "3d"])
def test_wrong_derived_buffer_raises(swin_releases, family, key, replace, message, strict):
    """A derived buffer that is not the window's is refused by ``load_state_dict``, under
    ``strict=False`` too (never loaded silently), with one line naming the key."""
    sd = dict(swin_releases[family])
    sd[key] = replace(sd[key])
    with pytest.raises(RuntimeError, match=message) as e:
        build_model(FAMILIES[family].tiny).load_state_dict(sd, strict=strict)
    header, *lines = str(e.value).split("\n\t")
    assert header.startswith("Error(s) in loading state_dict for ") and len(lines) == 1, e.value
    assert "\n" not in lines[0]


def test_unknown_keys_stay_unexpected(swin_releases):
    """Only the derived buffers, where their module keeps them, are dropped: a mask filed under
    the attention module, an index under the block, a look-alike leaf and a stray key are
    unexpected under ``strict=True`` and reported under ``strict=False``."""
    sd = dict(swin_releases["swin"])
    mask = sd["layers.0.blocks.1.attn_mask"]
    index = sd["layers.0.blocks.1.attn.relative_position_index"]
    extra = {
        "layers.0.blocks.1.attn.attn_mask": mask,
        "layers.0.blocks.1.relative_position_index": index,
        "layers.0.blocks.1.attn.relative_position_index_old": index,
        "layers.0.attn_mask": mask,
        "head.relative_position_index": index,
    }
    sd.update(extra)
    model = build_model(FAMILIES["swin"].tiny)
    with pytest.raises(RuntimeError, match="Unexpected key") as e:
        model.load_state_dict(sd, strict=True)
    assert all(f'"{k}"' in str(e.value) for k in extra), e.value
    result = model.load_state_dict(sd, strict=False)
    assert sorted(result.unexpected_keys) == sorted(extra) and result.missing_keys == []


@pytest.mark.parametrize("window", [(7, 7), (2, 3, 3)], ids=["2d", "3d"])
def test_check_window_buffer(window):
    """The shared check: the window's index passes as (N, N) and flattened (N * N,), a
    transposed one or another window's does not; a mask needs (..., N, N); an index of the
    wrong shape is refused without being read."""
    n = int(np.prod(window))
    index = relative_position_index(window)
    check_window_buffer("relative_position_index", index, window)
    check_window_buffer("relative_position_index", index.reshape(-1), window)
    check_window_buffer("attn_mask", np.zeros((4, n, n), np.float32), window)
    other = tuple(w + 1 for w in window)
    for bad in (index.T, relative_position_index(other)):
        with pytest.raises(ValueError, match="is not the relative position index"):
            check_window_buffer("relative_position_index", bad, window)
    with pytest.raises(ValueError, match=rf"attn_mask has shape \(4, {n}, {n + 1}\)"):
        check_window_buffer("attn_mask", np.zeros((4, n, n + 1), np.float32), window)

    def unread(value):
        raise AssertionError("read before its shape was compared")

    with pytest.raises(ValueError, match=r"x \(shape \(3, 3\)\) is not"):
        check_window_buffer("relative_position_index", np.zeros((3, 3)), window, "x", unread)
    with pytest.raises(ValueError, match="'bias' is not a window buffer"):
        check_window_buffer("bias", index, window)

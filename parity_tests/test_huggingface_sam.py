"""Hugging Face SAM against transformers itself: ``SamModel`` / ``SamVisionModel`` built by
transformers with every parameter random (``randomize_``: no zero tables, no unit norms), saved
with ``save_pretrained``, loaded with ``create_model(checkpoint=DIR)`` (the architecture from
``config.json``, the decoder's head count included, held to every tensor).

- the reference's masks and IoU for a point prompt and a box prompt equal transformers' within
  1e-4 x std (``MODEL_TOLERANCE``), at 128 and at an odd size (120: a 7 x 7 token grid padded
  to windows of 3, an input that is no multiple of the patch);
- the Flax and Keras ports' predictors loaded from the directory equal transformers too;
- the directory we write loads in transformers' ``from_pretrained`` with bit-identical weights,
  and its ``config.json`` makes transformers compute the reference's function (float64: equal to
  1e-10);
- hostile ``config.json`` files fail in one line with the converter's exit code.

(Round trips through Keras and Flax back to the layout, bit-exact, and loading in every
framework: the family suites, whose ``huggingface`` checkpoints are transformers' own models.)

transformers' SamModel runs the two-way transformer's LayerNorms at eps 1e-6 (every Hub
``config.json``), the official SAM and the reference at 1e-5: the peer runs here use transformers'
default, so the bound covers that difference (measured up to 2.6e-5 x std at 128, against
3.4e-6 x std when transformers is given 1e-5).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import checkpoint_factory as factory
import numpy as np
import pytest
import torch
from cli_checks import one_line
from family_suite import assert_same_checkpoint
from transformers import SamConfig, SamModel, SamVisionConfig, SamVisionModel

from weight_convert import cli, convert, layouts
from weight_convert.frameworks.reference import randomize_
from weight_convert.sources import read_source
from weight_convert.tolerance import BLOCK_TOLERANCE, FLOAT64_TOLERANCE, MODEL_TOLERANCE
from zoo.configs import reference_shapes
from zoo.models import create_model
from zoo.registry import FAMILIES

TINY = FAMILIES["sam"].tiny
#: the peers' sizes. "128": test_sam_predictor.py's tiny SAM (windows of 3 on an 8 x 8 grid,
#: padded; blocks 1 and 2 global), so the Flax predictor run here compiles what that test
#: compiles; "odd-120": a 7 x 7 grid, MLP 2 x width, 2 decoder heads (config.json's, in no
#: shape), a 4-layer IoU head (proj_in, layers.0, layers.1, proj_out), 2 multimask outputs
CONFIGS = {
    "128": dataclasses.replace(TINY, encoder_depth=3, encoder_global_attn_indexes=(1, 2)),
    "odd-120": dataclasses.replace(
        TINY,
        img_size=120,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(0,),
        mlp_ratio=2.0,
        mask_in_chans=8,
        transformer_mlp_dim=48,
        transformer_num_heads=2,
        iou_head_depth=4,
        iou_head_hidden_dim=24,
        num_multimask_outputs=2,
    ),
}
#: the weights' seeds: the IoU bound is 1e-4 x the std of 4 numbers (2 images x 2 masks at
#: odd-120), which some draws make nearly equal (seed 1: std 0.014, the error 0.46 of the bound)
SEEDS = {"128": 0, "odd-120": 3}


def _peer(config, seed: int, directory: Path):
    """transformers' model of ``config`` with random weights, saved in ``directory``."""
    model = randomize_(factory.huggingface_sam_module(config), seed).eval()
    model.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def peers(tmp_path_factory) -> dict[str, tuple[SamModel, Path]]:
    """size -> (transformers' SamModel with random weights, its save_pretrained directory)."""
    root = tmp_path_factory.mktemp("hf_sam")
    return {size: (_peer(c, SEEDS[size], root / size), root / size) for size, c in CONFIGS.items()}


def _prompts(size: int, batch: int = 2) -> dict[str, dict[str, np.ndarray]]:
    """Point prompts (one foreground, one background point per image) and box prompts, in the
    input's pixels, for ``batch`` images."""
    rng = np.random.default_rng(size)
    points = (rng.uniform(0.05, 0.95, (batch, 2, 2)) * size).astype(np.float32)
    corners = np.sort(rng.uniform(0.05, 0.95, (batch, 2, 2)), axis=1) * size
    return {
        "point": dict(points=points, labels=np.tile(np.array([[1, 0]], np.int32), (batch, 1))),
        "box": dict(boxes=corners.reshape(batch, 4).astype(np.float32)),
    }


def _images(size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)


@torch.no_grad()
def _transformers(model: SamModel, images: np.ndarray, prompt: dict, dtype=torch.float32):
    """transformers' low-res masks (B, M, 4g, 4g) and IoU (B, M): one prompt set per image."""
    t = {k: torch.from_numpy(v)[:, None] for k, v in prompt.items()}
    if "points" in t:
        t = {"input_points": t["points"].to(dtype), "input_labels": t["labels"]}
    else:
        t = {"input_boxes": t["boxes"].to(dtype)}
    out = model(pixel_values=torch.from_numpy(images).to(dtype), **t)
    return out.pred_masks[:, 0].numpy(), out.iou_scores[:, 0].numpy()


@torch.no_grad()
def _decode(model, images: np.ndarray, prompt: dict):
    """The reference ``Sam`` on ``images`` (B, 3, S, S) with one prompt set per image, as
    segment-anything's predictor calls the parts: masks (B, M, 4g, 4g), IoU (B, M)."""
    embeddings = model.image_encoder(torch.from_numpy(images))
    image_pe = model.prompt_encoder.get_dense_pe()
    masks, ious = [], []
    for i in range(images.shape[0]):
        one = {k: torch.from_numpy(v[i : i + 1]) for k, v in prompt.items()}
        points = (one["points"], one["labels"]) if "points" in one else None
        sparse, dense = model.prompt_encoder(points, one.get("boxes"), None)
        m, iou = model.mask_decoder(embeddings[i : i + 1], image_pe, sparse, dense, True)
        masks.append(m.numpy())
        ious.append(iou.numpy())
    return np.concatenate(masks), np.concatenate(ious)


def _assert_close(got, want, tolerance, what: str) -> float:
    bound = tolerance.bound(np.asarray(want, np.float64))
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    assert err <= bound, f"{what}: max abs {err:.3e} > {bound:.3e} ({tolerance.describe()})"
    return err


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize("size", list(CONFIGS))
def test_every_sammodel_key_is_the_layouts(peers, size):
    """SamModel's whole state dict (both names of the tied positional matrix) is the
    huggingface layout: every tensor maps to a reference tensor and back, and the reference's
    tensors written in the layout are exactly what save_pretrained stored (one tied copy)."""
    from safetensors.numpy import load_file

    model, directory = peers[size]
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert "prompt_encoder.shared_embedding.positional_embedding" in state
    detected = layouts.detect(state)
    assert (detected.layout, detected.family) == ("huggingface", "sam")
    reference = layouts.to_reference(state, detected)
    assert list(reference) == list(reference_shapes(detected.config))
    stored = load_file(directory / "model.safetensors")
    written = layouts.from_reference(reference, "huggingface", "sam", detected.config)
    assert (
        set(written)
        == set(stored)
        == set(state) - {"prompt_encoder.shared_embedding.positional_embedding"}
    )
    for key, value in written.items():
        assert np.array_equal(value, stored[key]), key


def test_a_one_layer_iou_head_has_no_huggingface_layout():
    """transformers' SamFeedForward has proj_in and proj_out: a 1-layer IoU head is refused
    when written (the layout's key rule), not written wrong."""
    config = dataclasses.replace(TINY, iou_head_depth=1)
    reference = {k: np.zeros(s, np.float32) for k, s in reference_shapes(config).items()}
    with pytest.raises(layouts.LayoutError, match="SamFeedForward"):
        layouts.from_reference(reference, "huggingface", "sam", config)
    with pytest.raises(layouts.LayoutError, match="SamFeedForward"):
        layouts.config_json(config, "huggingface")


@pytest.mark.parametrize("size", ["b", "l", "h"])
def test_release_configs_read_as_the_variants(size):
    """The config.json of ``facebook/sam-vit-{base,large,huge}`` (transformers' SamConfig at the
    release sizes; no weights) reads as ``sam_vit_{b,l,h}``, its vision_config alone (a
    SamVisionModel's) as ``samvit_*``; the config.json written for each variant is one that
    transformers takes, and it reads back as the variant."""
    from transformers import PretrainedConfig

    from zoo.configs import config_from_dict, match_variant
    from zoo.families.sam import LONG, SIZES

    dim, depth, heads, global_blocks = SIZES[size]
    vision = SamVisionConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        global_attn_indexes=list(global_blocks),
    )
    release = json.loads(SamConfig(vision_config=vision).to_json_string())
    cases = (
        ("sam", release, f"sam_vit_{size}", SamConfig),
        ("sam_image_encoder", release["vision_config"], f"samvit_{LONG[size]}_patch16", None),
    )
    for family, config_json, variant, hf_class in cases:
        from_hf = layouts.layout_spec("huggingface", family).huggingface.from_hf
        config = config_from_dict(from_hf(config_json, []))
        assert match_variant(config) == variant
        written = json.loads(json.dumps(layouts.config_json(config, "huggingface")))
        assert config_from_dict(from_hf(written, [])) == config
        theirs = (hf_class or SamVisionConfig)(**written)
        assert isinstance(theirs, PretrainedConfig)
        assert json.loads(theirs.to_json_string())["model_type"] == config_json["model_type"]


# --------------------------------------------------------------------------- peer parity


@pytest.mark.parametrize("prompt", ["point", "box"])
@pytest.mark.parametrize("size", list(CONFIGS))
def test_reference_matches_transformers(peers, size, prompt):
    """``create_model(checkpoint=DIR)``: the config is the one the peer was built with (the
    decoder's heads from config.json), the masks and IoU within 1e-4 x std of transformers' own
    forward, two images with a prompt set each."""
    model, directory = peers[size]
    reference = create_model(checkpoint=directory)
    assert reference.config == CONFIGS[size]
    s = reference.config.img_size
    images, prompts = _images(s), _prompts(s)[prompt]
    want_masks, want_iou = _transformers(model, images, prompts)
    masks, iou = _decode(reference, images, prompts)
    grid = 4 * (s // 16)
    assert masks.shape == (2, reference.config.num_multimask_outputs, grid, grid)
    _assert_close(masks, want_masks, MODEL_TOLERANCE, "masks")
    _assert_close(iou, want_iou, MODEL_TOLERANCE, "iou")


def test_vision_model_matches_transformers(tmp_path):
    """transformers' SamVisionModel is the ``sam_image_encoder`` family: its directory reads
    as the image encoder alone, equal to transformers' embedding within 1e-4 x std, and
    writes back to a directory SamVisionModel loads with bit-identical weights."""
    config = FAMILIES["sam_image_encoder"].tiny
    peer = _peer(config, 5, tmp_path / "vision")
    assert isinstance(peer, SamVisionModel)
    source = read_source(tmp_path / "vision")
    assert (source.layout, source.family) == ("huggingface", "sam_image_encoder")
    reference = create_model(checkpoint=tmp_path / "vision")
    assert reference.config == config
    images = _images(128)
    with torch.no_grad():
        want = peer(pixel_values=torch.from_numpy(images)).last_hidden_state.numpy()
        got = reference(torch.from_numpy(images)).numpy()
    _assert_close(got, want, MODEL_TOLERANCE, "image embedding")
    out = tmp_path / "back"
    convert.convert(tmp_path / "vision", "torch", out, layout="huggingface")
    again = SamVisionModel.from_pretrained(out)
    for key, value in peer.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


# --------------------------------------------------------------------------- writing


def test_written_directory_loads_in_transformers(peers, tmp_path, capsys):
    """``--to torch --layout huggingface`` writes a directory that ``SamModel.from_pretrained``
    loads with every tensor bit-identical (both tied names), and whose config.json (the
    official SAM's LayerNorm eps in the two-way transformer) makes transformers compute the
    reference's function: float64 masks and IoU equal to 1e-10 x max."""
    model, directory = peers["odd-120"]
    out = tmp_path / "written"
    args = ["convert", str(directory), "--to", "torch", "--layout", "huggingface", "-o"]
    code = cli.main([*args, str(out)])
    assert code == 0, capsys.readouterr().err
    theirs = SamModel.from_pretrained(out).eval()
    mine = theirs.state_dict()
    for key, value in model.state_dict().items():
        assert mine[key].dtype == value.dtype and torch.equal(mine[key], value), key
    assert (
        json.loads((out / "config.json").read_text())["mask_decoder_config"]["num_attention_heads"]
        == 2
    )
    reference = create_model(checkpoint=directory)
    theirs, reference = theirs.double(), reference.double()
    images = _images(120, batch=1)
    for prompt in _prompts(120, batch=1).values():
        prompt = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in prompt.items()}
        want = _transformers(theirs, images.astype(np.float64), prompt, torch.float64)
        got = _decode(reference, images.astype(np.float64), prompt)
        for g, w, what in zip(got, want, ("masks", "iou"), strict=True):
            _assert_close(g, w, FLOAT64_TOLERANCE, what)


# --------------------------------------------------------------------------- ports


def _port_predictor(framework: str, directory: Path):
    """The port's SamPredictor over ``create_model(checkpoint=directory)``."""
    if framework == "flax":
        from ports.flax.models import create_model as create_port_model
        from ports.flax.predictor import SamPredictor as PortPredictor
    else:
        from ports.keras.models import create_model as create_port_model
        from ports.keras.predictor import SamPredictor as PortPredictor
    return PortPredictor(create_port_model(checkpoint=directory))


#: the photo and prompts of test_sam_predictor.py's port test (its first photo, the shapes its
#: "points" and "box" cases take): the Flax predictor's compiled functions serve both tests
PHOTO = (301, 157)
PHOTO_PROMPTS = {
    "points": dict(
        point_coords=np.array([[0.3, 0.4], [0.7, 0.8], [0.5, 0.2]]) * PHOTO[::-1],
        point_labels=np.array([1, 0, 1]),
    ),
    "box": dict(box=np.array([0.1, 0.15, 0.8, 0.9]) * (PHOTO[::-1] * 2), multimask_output=False),
}


def _transformers_on_photo(model: SamModel, predictor, prompt: dict):
    """transformers' low-res masks (M, 4g, 4g) and IoU (M,) for the photo the predictor holds:
    the same normalized, padded input and the prompts in its pixels (transformers' processor
    resizes as segment-anything does; the input is given here so both see the same one)."""
    from zoo.sam_transforms import preprocess

    photo = np.random.default_rng(1).integers(0, 256, (*PHOTO, 3), dtype=np.uint8)
    image = preprocess(predictor.transform.apply_image(photo), predictor.config)
    inputs = {"pixel_values": torch.from_numpy(image.transpose(0, 3, 1, 2))}
    if "point_coords" in prompt:
        coords = predictor.transform.apply_coords(prompt["point_coords"], PHOTO)
        inputs["input_points"] = torch.from_numpy(coords[None, None].astype(np.float32))
        inputs["input_labels"] = torch.from_numpy(prompt["point_labels"][None, None])
    else:
        box = predictor.transform.apply_boxes(prompt["box"], PHOTO)
        inputs["input_boxes"] = torch.from_numpy(box[None].astype(np.float32))
    multimask = prompt.get("multimask_output", True)
    with torch.no_grad():
        out = model(**inputs, multimask_output=multimask)
    return photo, out.pred_masks[0, 0].numpy(), out.iou_scores[0, 0].numpy()


#: Keras on JAX and torch runs the port test with -m slow (a tiny SAM's first call compiles op
#: by op there); Flax and Keras on TensorFlow run it in CI
def _check_port(peers, port_name: str) -> None:
    """``create_model(checkpoint=DIR)`` of the port, in its SamPredictor: low-res masks within
    1e-4 x std of transformers' and IoU (one number for a single mask: 1e-5) on a photo."""
    model, directory = peers["128"]
    predictor = _port_predictor(port_name.split("-")[0], directory)
    for name, prompt in PHOTO_PROMPTS.items():
        photo, masks, iou = _transformers_on_photo(model, predictor, prompt)
        if name == "points":
            predictor.set_image(photo)
        _, got_iou, got_masks = predictor.predict(**prompt, return_logits=True)
        _assert_close(got_masks, masks, MODEL_TOLERANCE, f"{port_name} {name} masks")
        tolerance = MODEL_TOLERANCE if iou.size > 1 else BLOCK_TOLERANCE
        _assert_close(got_iou, iou, tolerance, f"{port_name} {name} iou")


@pytest.mark.slow
def test_ports_match_transformers(peers, port):
    """Slow (CI time): in CI the reference is held to transformers here, and every port to the
    reference on this layout's directories by the family suite (bit-exact loading, parity)."""
    _check_port(peers, port.NAME)


@pytest.mark.slow
@pytest.mark.parametrize("target", [pytest.param("keras", marks=pytest.mark.keras), "flax"])
def test_cli_verify_round_trip(peers, target, tmp_path, capsys):
    """``weight-convert convert DIR --to keras|flax --verify`` (the port against the reference
    layer by layer), then the port's file ``--to torch --layout huggingface --verify``: the
    directory's tensors come back bit-exact. (-m slow: each --verify compiles the tiny SAM,
    ~15 s; the family suite's test_round_trip[huggingface] converts both ways in CI.)"""
    _, directory = peers["128"]
    code = cli.main(
        ["convert", str(directory), "--to", target, "-o", str(tmp_path / "m"), "--verify"]
    )
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert "layout:   huggingface" in printed and ": PASS" in printed
    port_file = next(p for p in tmp_path.iterdir() if p.suffix in (".keras", ".safetensors"))
    back = tmp_path / "back"
    args = ["convert", str(port_file), "--to", "torch", "--layout", "huggingface", "-o"]
    code = cli.main([*args, str(back), "--verify"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert ": PASS" in printed
    assert_same_checkpoint(str(back / "model.safetensors"), str(directory / "model.safetensors"))


# --------------------------------------------------------------------------- hostile


def _edit_config(path: Path, section: str, **fields) -> None:
    config = json.loads(path.read_text())
    (config[section] if section else config).update(fields)
    path.write_text(json.dumps(config))


def _differing_tied_copies(directory: Path) -> None:
    from safetensors.numpy import load_file, save_file

    state = load_file(directory / "model.safetensors")
    tied = state["shared_image_embedding.positional_embedding"]
    state["prompt_encoder.shared_embedding.positional_embedding"] = tied + 1
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


HOSTILE = {
    # a head count no shape shows, that does not divide the decoder's width (32, 16 in the
    # cross attention)
    "heads-do-not-divide": (
        lambda d: _edit_config(d / "config.json", "mask_decoder_config", num_attention_heads=3),
        10,
        "transformer_num_heads",
    ),
    "mlp-contradicts-tensors": (
        lambda d: _edit_config(d / "config.json", "mask_decoder_config", mlp_dim=128),
        11,
        r"mlp\.lin1\.\w+ has shape \(64",
    ),
    "grid-contradicts-tensors": (
        lambda d: _edit_config(d / "config.json", "vision_config", global_attn_indexes=[0]),
        11,
        "rel_pos_h has shape",
    ),
    "decoder-activation": (
        lambda d: _edit_config(d / "config.json", "mask_decoder_config", hidden_act="gelu"),
        10,
        "mask_decoder_config: config.json sets hidden_act='gelu'",
    ),
    "vision-eps": (
        lambda d: _edit_config(d / "config.json", "vision_config", layer_norm_eps=1e-5),
        10,
        "vision_config: config.json sets layer_norm_eps=1e-05",
    ),
    "prompt-grid": (
        lambda d: _edit_config(d / "config.json", "prompt_encoder_config", image_size=256),
        10,
        "prompt_encoder_config.image_size differs",
    ),
    "not-sam": (
        lambda d: _edit_config(d / "config.json", "", model_type="sam2"),
        10,
        "model_type 'sam2'",
    ),
    "tied-copies-differ": (_differing_tied_copies, 10, "one tied tensor but differ"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_directory_fails_in_one_line(peers, name, tmp_path, capsys):
    edit, exit_code, message = HOSTILE[name]
    directory = tmp_path / "sam"
    shutil.copytree(peers["128"][1], directory)
    edit(directory)
    capsys.readouterr()
    code = cli.main(["convert", str(directory), "--to", "flax", "-o", str(tmp_path / "out")])
    one_line(code, capsys.readouterr().err, exit_code, message)
    assert not list(tmp_path.glob("out*"))

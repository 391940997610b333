"""OpenAI's CLIP releases (``ViT-B-16.pt``, ``RN50.pt``) are TorchScript archives of the whole
CLIP: made here as they are, without downloads, and taken through the converter and the three
frameworks' ``create_model``.

An archive here is open_clip's whole ``CLIP`` (the families' ``open_clip_model``: tiny widths,
QuickGELU, every tensor random, a tiny text tower), converted to float16 as OpenAI's files are
(``convert_weights_to_lp``: convs, linears, attention and ``proj`` float16; norms and embeddings
float32), given the release's int entries ``input_resolution`` / ``context_length`` /
``vocab_size`` (0-d int64 buffers of the root: OpenAI's loader reads
``model.input_resolution.item()`` and deletes all three from the state dict), scripted (what
open_clip's ``create_model(..., jit=True)`` does: ``torch.jit.script``) and ``torch.jit.save``d.
A scripted open_clip CLIP also keeps the text tower's causal ``attn_mask`` (a non-persistent
buffer; TorchScript keeps no persistence), which the ``openai`` layout drops with the text
tower. OpenAI traced theirs; a traced archive differs in ``code/`` only, which the reader's own
tests (test_torchscript.py) cover for traced and scripted modules alike.

What is expected comes from PyTorch itself (``torch.jit.load(f).state_dict()``), never from the
reader under test.

Keras files of such mixed float16 / float32 weights keep each tensor's dtype (Keras writes each
dataset in its value's dtype; the reader casts each value back to its dataset's, through Keras'
own save walk, ``zoo.compat.keras_variable_datasets``): the round trip through Keras and Flax is
bit-exact here and on the MNIST ConvNet with float16, bfloat16 and float32 mixed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from weight_convert import checkpoints, cli, convert
from zoo.registry import FAMILIES

#: the keys of the tiny archives beyond the image tower: the text tower's 18 tensors
#: (``logit_scale`` included), its causal ``attn_mask`` and the release's three int entries
OUTSIDE = 22
INT_ENTRIES = ("input_resolution", "context_length", "vocab_size")
CLIP_FAMILIES = ("clip_vit", "clip_resnet")


def openai_archive(path: Path, model: torch.nn.Module, image_size: int) -> Path:
    """``model`` (open_clip's whole float32 CLIP) as OpenAI's release archive: float16 where
    OpenAI's weights are, the three int entries as 0-d int64 buffers, scripted and saved."""
    from open_clip.model import convert_weights_to_lp

    convert_weights_to_lp(model, torch.float16)
    entries = (image_size, model.context_length, model.vocab_size)
    for name, value in zip(INT_ENTRIES, entries, strict=True):
        model.__dict__.pop(name, None)  # open_clip keeps two of them as plain ints
        model.register_buffer(name, torch.tensor(value))
    torch.jit.script(model).save(path)
    return path


def tiny_archive(path: Path, family: str, seed: int) -> Path:
    """The family's tiny config as a whole-CLIP release archive."""
    if family == "clip_vit":
        from families.test_clip_vit import open_clip_model
    else:
        from families.test_clip_resnet import open_clip_model
    config = FAMILIES[family].tiny
    return openai_archive(path, open_clip_model(config, seed), config.img_size)


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip_jit")
    return {f: tiny_archive(root / f"{f}.pt", f, seed) for seed, f in enumerate(CLIP_FAMILIES)}


def _released(path: Path) -> dict[str, torch.Tensor]:
    """The archive's state dict as PyTorch loads it."""
    return torch.jit.load(str(path)).state_dict()


@pytest.mark.parametrize("family", CLIP_FAMILIES)
def test_inspect_names_openai_layout(family, archives, capsys):
    """``inspect`` reads the archive (format torchscript) as the ``openai`` layout of the
    family with the tiny config solved from its shapes (no variant: tiny widths), float16 and
    float32 tensors beside the int entries, the text tower and the int entries dropped and
    counted."""
    from zoo.configs import config_from_dict

    released = _released(archives[family])
    assert {str(released[k].dtype) for k in INT_ENTRIES} == {"torch.int64"}
    assert released["visual.conv1.weight"].dtype == torch.float16
    assert cli.main(["inspect", str(archives[family]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["layout"], shown["family"], shown["variant"]) == ("openai", family, None)
    assert shown["container"]["format"] == "torchscript"
    assert config_from_dict(shown["config"]) == FAMILIES[family].tiny
    assert shown["dtypes"] == ["float16", "float32", "int64"]
    dropped = next(n for n in shown["notes"] if "outside the model dropped" in n)
    assert dropped.startswith(f"{OUTSIDE} tensor(s)"), dropped
    assert all(f"{k} (1)" in dropped for k in (*INT_ENTRIES, "attn_mask")), dropped


@pytest.mark.parametrize(("family", "target"), [("clip_vit", "flax"), ("clip_resnet", "keras")])
def test_convert_verify(family, target, archives, tmp_path, capsys):
    """``convert --to keras`` / ``--to flax`` with ``--verify``: the written model runs beside
    the reference loaded from the archive, every layer within 1e-4 x its std (each family and
    each target once, for CI time: the weights every target gets from either archive are held
    bit for bit by the tests below, and the ports' numerics on them by the family suites)."""
    shape = {"clip_vit": "1x3x39x33", "clip_resnet": "1x3x65x79"}[family]
    argv = ["convert", str(archives[family]), "--to", target, "-o", str(tmp_path / target)]
    code = cli.main([*argv, "--verify", "--verify-shape", shape])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert "layout:   openai" in printed and f"family:   {family}" in printed, printed
    assert ": PASS" in printed and "FAIL" not in printed, printed


@pytest.mark.keras
@pytest.mark.parametrize("family", CLIP_FAMILIES)
def test_back_to_openai_layout_through_keras_and_flax(family, archives, tmp_path):
    """archive -> Keras -> Flax -> ``--layout openai``: the image tower's tensors, as PyTorch
    loads them from the archive, bit-exact in their float16 / float32 dtypes (the Keras file
    keeps each dataset's dtype and is read back in it); nothing else written (the text tower
    and int entries dropped, counted in the notes)."""
    source = str(archives[family])
    keras, _ = convert.convert(source, "keras", tmp_path / "k")
    assert any(n.startswith(f"{OUTSIDE} tensor(s) outside") for n in keras.detected["notes"])
    flax, _ = convert.convert(keras.outputs[0], "flax", tmp_path / "f")
    back, _ = convert.convert(flax.outputs[0], "torch", tmp_path / "back.pth", layout="openai")
    got, _ = checkpoints.load_state_dict(back.outputs[0])
    want = {k: v for k, v in _released(archives[family]).items() if k.startswith("visual.")}
    assert set(got) == set(want)
    assert {"float16", "float32"} <= {str(v.dtype) for v in got.values()}  # and int64 counters
    for key, value in want.items():
        assert str(got[key].dtype) == str(value.dtype).removeprefix("torch."), key
        assert np.array_equal(got[key], value.numpy()), key


@pytest.mark.parametrize("framework", ["torch", "keras", "flax"])
@pytest.mark.parametrize("family", CLIP_FAMILIES)
def test_create_model_from_archive(family, framework, archives):
    """``create_model(checkpoint=ARCHIVE.pt)`` in each framework: the tiny architecture from
    the archive, every weight the archive's value widened to float32 exactly (the models
    compute in float32), placed where the converter puts it (``transfer.to_port``)."""
    from family_suite import _create

    from weight_convert import transfer
    from weight_convert.frameworks import port
    from weight_convert.frameworks.reference import state_dict

    released = _released(archives[family])
    visual = {k.removeprefix("visual."): v for k, v in released.items() if k.startswith("visual.")}
    expected = {
        k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in visual.items()
    }
    model = _create(framework, checkpoint=str(archives[family]))
    assert model.config == FAMILIES[family].tiny
    if framework == "torch":
        got = state_dict(model)
    else:
        adapter = port(framework)
        got = adapter.read(model)
        expected = transfer.to_port(expected, adapter.shapes(model))
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key


@pytest.mark.slow
def test_full_size_vit_b16_archive(tmp_path, capsys):
    """A ``ViT-B-16.pt`` as OpenAI releases it (open_clip's ``ViT-B-16-quickgelu``, random
    weights, float16 as released, the int entries 224 / 77 / 49408; 300 MB): ``inspect`` names
    the variant ``clip_vit_b16``, ``convert --to flax --verify`` passes at 224, and back in
    ``--layout openai`` from the Flax file and from a Keras one the image tower is the
    archive's, bit for bit and dtype for dtype."""
    import open_clip

    from weight_convert.frameworks.reference import randomize_

    peer = randomize_(open_clip.create_model("ViT-B-16-quickgelu", pretrained=None), 8).eval()
    archive = openai_archive(tmp_path / "ViT-B-16.pt", peer, 224)
    del peer
    assert cli.main(["inspect", str(archive), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["layout"], shown["variant"]) == ("openai", "clip_vit_b16"), shown
    out = tmp_path / "f"
    argv = ["convert", str(archive), "--to", "flax", "-o", str(out), "--verify"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert ": PASS" in capsys.readouterr().out
    want = {k: v for k, v in _released(archive).items() if k.startswith("visual.")}
    keras, _ = convert.convert(str(archive), "keras", tmp_path / "k")
    for i, port_file in enumerate((f"{out}.safetensors", keras.outputs[0])):
        back, _ = convert.convert(port_file, "torch", tmp_path / f"b{i}.pth", layout="openai")
        got, _ = checkpoints.load_state_dict(back.outputs[0])
        assert set(got) == set(want)
        for key, value in want.items():
            assert str(got[key].dtype) == str(value.dtype).removeprefix("torch."), key
            assert np.array_equal(got[key], value.numpy()), key


# --------------------------------------------------------------------------- mixed dtypes in Keras

#: the tiny MNIST ConvNet's tensors in three dtypes (the rest float32)
MIXED = {"conv1.weight": "float16", "conv2.weight": "bfloat16", "fc2.weight": "float16"}


@pytest.mark.keras
def test_mixed_dtypes_through_keras_convnet(tmp_path, monkeypatch):
    """Another family, dtypes mixed (float16, bfloat16, float32): PyTorch -> Keras -> Flax ->
    PyTorch gives every tensor back bit for bit in its dtype; a Keras model loaded from the
    ``.keras`` still computes in float32 (variables float32, the values widened exactly); and
    values that did not come from the dataset the walk names (the walk planted wrong) are
    refused, not narrowed."""
    import keras
    from family_suite import reference_model

    import ports.keras.models
    from weight_convert import layouts, port_files
    from weight_convert.errors import CheckpointError
    from weight_convert.frameworks import keras_port
    from weight_convert.frameworks.reference import state_dict
    from weight_convert.tensors import FLOAT_DTYPES
    from weight_convert.writers import write_torch
    from zoo import compat

    config = FAMILIES["convnet"].tiny
    state = state_dict(reference_model(config, 4))
    state = {k: v.astype(FLOAT_DTYPES[MIXED.get(k, "float32")]) for k, v in state.items()}
    sd = layouts.from_reference(state, "official", "convnet", config)
    source = tmp_path / "net.safetensors"  # the converter's own writer: NumPy bfloat16 as is
    write_torch(sd, source, "official", "convnet")
    k, _ = convert.convert(str(source), "keras", tmp_path / "k")
    f, _ = convert.convert(k.outputs[0], "flax", tmp_path / "f")
    back, _ = convert.convert(f.outputs[0], "torch", tmp_path / "back.safetensors")
    got, _ = checkpoints.load_state_dict(back.outputs[0])
    assert set(got) == set(sd)
    for key, value in sd.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key

    model = ports.keras.models.create_model(checkpoint=k.outputs[0])
    assert {keras.backend.standardize_dtype(v.dtype) for v in model.weights} == {"float32"}
    values = keras_port.read(model)
    assert values["conv1.kernel"].dtype == np.float32
    assert np.array_equal(
        values["conv1.kernel"], state["conv1.weight"].astype(np.float32).transpose(2, 3, 1, 0)
    )

    walk = compat.keras_variable_datasets

    def planted(m):  # every variable said to come from conv1's float16 kernel
        return {v: "/conv1/vars/0" for v in walk(m)}

    monkeypatch.setattr(compat, "keras_variable_datasets", planted)
    with pytest.raises(CheckpointError, match="does not hold the float16 values of its dataset"):
        port_files.read_keras_weights_h5(k.outputs[0])

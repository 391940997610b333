"""Peer parity with transformers' own Swin: ``SwinForImageClassification`` / ``SwinModel`` made by
transformers with every parameter random, saved by ``save_pretrained``, loaded by
``create_model(checkpoint=DIR)`` in the three frameworks: logits (features) within 1e-4 x std of
transformers' forward at the default and an odd size. The Hugging Face directory the converter
writes loads in transformers with the same weights, bit for bit. Hub checkpoints written by older
transformers carry ``relative_position_index``: checked and dropped."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from weight_convert.tolerance import MODEL_TOLERANCE  # noqa: E402

#: a tiny transformers Swin: two stages, window 4 (the maps of both sizes below are >= the window,
#: where transformers and the official code agree; transformers shrinks the window below it)
HF_CONFIG = dict(
    image_size=64,
    patch_size=4,
    embed_dim=16,
    depths=[2, 2],
    num_heads=[2, 4],
    window_size=4,
    num_labels=7,
)
SHAPES = [(2, 3, 64, 64), (1, 3, 60, 76)]
SLOW_PORTS = [
    pytest.param("keras", marks=[pytest.mark.keras, pytest.mark.slow]),
    pytest.param("flax", marks=pytest.mark.slow),
]


def _randomize(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(
                1.0 + 0.2 * noise if "norm" in name and name.endswith("weight") else 0.3 * noise
            )


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{kind: (directory, transformers model)} for the classifier and the bare backbone."""
    out = {}
    for kind, cls in (
        ("classifier", transformers.SwinForImageClassification),
        ("backbone", transformers.SwinModel),
    ):
        model = cls(transformers.SwinConfig(**HF_CONFIG)).eval()
        _randomize(model, seed=len(out))
        path = tmp_path_factory.mktemp(f"hf_swin_{kind}")
        model.save_pretrained(path)
        out[kind] = (str(path), model)
    return out


def _inputs(shape):
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)


def _ours(framework: str, path: str, x: np.ndarray):
    if framework == "torch":
        import zoo.models as models
    elif framework == "keras":
        import ports.keras.models as models
    else:
        import ports.flax.models as models
    model = models.create_model(checkpoint=path)
    if framework == "torch":
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        return [t.numpy() for t in out] if isinstance(out, list) else out.numpy()
    x = np.moveaxis(x, 1, -1)
    if framework == "flax":  # eager NNX dispatches op by op: jit is the way a user runs it
        from flax import nnx

        out = nnx.jit(lambda m, v: m(v))(model, x)
    else:
        import keras

        out = model(x)
        out = (
            [keras.ops.convert_to_numpy(t) for t in out]
            if isinstance(out, list)
            else keras.ops.convert_to_numpy(out)
        )
    return [np.asarray(t) for t in out] if isinstance(out, list) else np.asarray(out)


def _check(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    bound = MODEL_TOLERANCE.rtol * float(want.std())
    err = float(np.abs(got - want).max())
    assert err <= bound, f"max abs error {err:.3e} > {bound:.3e}"


#: the reference at both sizes in CI; the ports (held to the reference at many sizes, and
#: loaded from this layout bit-exact, by the family suite) at the odd one with -m slow
CASES = [
    ("torch", SHAPES[0]),
    ("torch", SHAPES[1]),
    pytest.param("keras", SHAPES[1], marks=[pytest.mark.keras, pytest.mark.slow]),
    pytest.param("flax", SHAPES[1], marks=pytest.mark.slow),
]


@pytest.mark.parametrize(
    ("framework", "shape"),
    CASES,
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v,
)
def test_classifier_logits_match_transformers(hf_dirs, framework, shape):
    path, peer = hf_dirs["classifier"]
    x = _inputs(shape)
    with torch.no_grad():
        want = peer(pixel_values=torch.from_numpy(x)).logits.numpy()
    _check(_ours(framework, path, x), want)


@pytest.mark.parametrize("framework", ["torch", *SLOW_PORTS])
def test_backbone_features_match_transformers(hf_dirs, framework):
    """``SwinModel`` loads as ``features_only``: its last hidden state is our last stage map."""
    path, peer = hf_dirs["backbone"]
    x = _inputs(SHAPES[1])
    with torch.no_grad():
        want = peer(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    features = _ours(framework, path, x)
    last = features[-1]
    _check(last.reshape(last.shape[0], -1, last.shape[-1]), want)


def test_written_directory_loads_in_transformers(hf_dirs, tmp_path):
    """classifier dir -> Flax -> ``--layout huggingface`` directory -> transformers'
    ``from_pretrained``: every parameter bit-identical, the same logits."""
    from weight_convert import convert

    path, peer = hf_dirs["classifier"]
    flax, _ = convert.convert(path, "flax", tmp_path / "m")
    out = tmp_path / "hf"
    convert.convert(flax.outputs[0], "torch", out, layout="huggingface")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["SwinForImageClassification"]
    back = transformers.SwinForImageClassification.from_pretrained(out).eval()
    want, got = peer.state_dict(), back.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    x = torch.from_numpy(_inputs(SHAPES[0]))
    with torch.no_grad():
        _check(back(pixel_values=x).logits.numpy(), peer(pixel_values=x).logits.numpy())


def test_relative_position_index_of_older_files(hf_dirs, tmp_path):
    """A Hub file with ``relative_position_index`` (older transformers kept it) loads; a wrong
    one is refused in one line, as every layout refuses a modified derived buffer."""
    from safetensors.numpy import load_file, save_file

    from weight_convert import layouts, sources
    from zoo.windows import relative_position_index

    path, _ = hf_dirs["classifier"]
    tensors = load_file(f"{path}/model.safetensors")
    index = relative_position_index((4, 4)).astype(np.int64)
    for i, depth in enumerate(HF_CONFIG["depths"]):
        for j in range(depth):
            key = f"swin.encoder.layers.{i}.blocks.{j}.attention.self.relative_position_index"
            tensors[key] = index
    for name, data in (("good", tensors), ("bad", {**tensors, key: index[::-1].copy()})):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(f"{path}/config.json", folder / "config.json")
        save_file(data, str(folder / "model.safetensors"), metadata={"format": "pt"})
        if name == "good":
            source = sources.read_source(folder)
            assert source.layout == "huggingface"
            assert "4 derived buffer(s) checked and dropped" in source.detected.notes
            assert list(source.reference) == list(sources.read_source(path).reference)
        else:
            with pytest.raises(layouts.LayoutError, match="relative position index"):
                sources.read_source(folder)


def test_cli_inspects_and_verifies_a_directory(hf_dirs, tmp_path, capsys):
    """``weight-convert inspect DIR`` names the layout and the config.json's architecture;
    ``convert DIR --to flax --verify`` passes layer by layer."""
    from weight_convert import cli

    path, _ = hf_dirs["classifier"]
    assert cli.main(["inspect", path, "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert (described["layout"], described["family"]) == ("huggingface", "swin")
    assert described["config"]["num_classes"] == HF_CONFIG["num_labels"]
    assert described["container"]["format"] == "huggingface"
    code = cli.main(["convert", path, "--to", "flax", "-o", str(tmp_path / "f"), "--verify"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert ": PASS" in printed

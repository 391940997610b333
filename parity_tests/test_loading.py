"""One-line loading (``create_model(name, checkpoint=PATH)`` / ``load_model(PATH)``) beyond what the
family suite runs per layout: the port files of every framework as checkpoints, a variant name or
config checked against the file, overrides limited to what the weights do not fix, a classifier's
weights into ``features_only`` models, ``allow_missing``, and the CLI's errors as exceptions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from family_suite import default_maker, reference_model

from weight_convert import convert, errors
from weight_convert.frameworks.reference import state_dict
from zoo.configs import VARIANTS
from zoo.registry import FAMILIES

CONFIG = FAMILIES["swin"].tiny
FRAMEWORKS = ["torch", pytest.param("keras", marks=pytest.mark.keras), "flax"]


def _models(framework: str):
    if framework == "torch":
        import zoo.models as models
    elif framework == "keras":
        import ports.keras.models as models
    else:
        import ports.flax.models as models
    return models


def _weights(framework: str, model) -> dict[str, np.ndarray]:
    """The model's weights by reference key."""
    if framework == "torch":
        return state_dict(model)
    from weight_convert import transfer
    from weight_convert.frameworks import port

    return transfer.to_torch(port(framework).read(model))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny Swin's official .pth (seed 7), and its Flax files."""
    folder = tmp_path_factory.mktemp("loading")
    pth = default_maker("official", "swin")(folder / "swin", CONFIG, 7)
    out = {"pth": pth}
    out["flax"] = convert.convert(pth, "flax", folder / "f")[0].outputs[0]
    out["msgpack"] = convert.convert(pth, "flax", folder / "m.msgpack")[0].outputs[0]
    return out


@pytest.fixture(scope="module")
def keras_files(files, tmp_path_factory):
    """Its .keras and .weights.h5 (Keras on this process's backend)."""
    pytest.importorskip("keras")
    written = convert.convert(files["pth"], "keras", tmp_path_factory.mktemp("k") / "k")[0]
    return dict(zip(("keras", "weights.h5"), written.outputs, strict=True))


#: (file kind, framework): each port's own files in its framework and in the reference (every
#: layout in every framework: the family suite's test_load_checkpoint)
KINDS = [
    ("flax", "flax"),
    ("msgpack", "flax"),
    ("flax", "torch"),
    ("msgpack", "torch"),
    pytest.param("keras", "keras", marks=pytest.mark.keras),
    pytest.param("weights.h5", "keras", marks=pytest.mark.keras),
    pytest.param("keras", "torch", marks=pytest.mark.keras),
    pytest.param("keras", "flax", marks=pytest.mark.keras),
]


@pytest.mark.parametrize(("kind", "framework"), KINDS)
def test_every_file_kind_loads(request, files, kind, framework):
    """Each file kind the converter reads loads with the same weights, bit for bit."""
    path = (request.getfixturevalue("keras_files") if "keras" in kind or ".h5" in kind else files)[
        kind
    ]
    want = state_dict(reference_model(CONFIG, 7))
    got = _weights(framework, _models(framework).load_model(path))
    assert set(got) == set(want)
    for key, value in want.items():
        assert np.array_equal(got[key], value), key


def test_name_and_config_are_checked_against_the_file(files):
    import zoo.models as models

    variant = next(n for n, v in VARIANTS.items() if v.config.family == "swin")
    with pytest.raises(errors.WrongModelError, match=f"checkpoint is not {variant}"):
        models.create_model(variant, checkpoint=files["pth"])
    other = dataclasses.replace(CONFIG, embed_dim=CONFIG.embed_dim * 2)
    with pytest.raises(errors.WrongModelError, match="differs in embed_dim"):
        models.create_model(other, checkpoint=files["pth"])
    same = dataclasses.replace(CONFIG, drop_path_rate=0.25)
    assert models.create_model(same, checkpoint=files["pth"]).config == same


def test_overrides_only_of_what_the_weights_do_not_fix(files):
    import zoo.models as models

    model = models.create_model(checkpoint=files["pth"], drop_path_rate=0.3)
    assert model.config.drop_path_rate == 0.3
    with pytest.raises(errors.UsageError, match="depths: architecture field"):
        models.create_model(checkpoint=files["pth"], depths=(1, 1))
    with pytest.raises(errors.UsageError, match="no_such_field: no field of SwinConfig"):
        models.create_model(checkpoint=files["pth"], no_such_field=1)
    assert errors.UsageError.exit_code == 2


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_features_only_takes_a_classifier(files, framework):
    """A classifier's weights load into the backbone: the head dropped, everything else exact;
    the backbone's file refuses ``features_only=False``."""
    models = _models(framework)
    model = models.create_model(checkpoint=files["pth"], features_only=True)
    assert model.config.features_only
    want = {
        k: v for k, v in state_dict(reference_model(CONFIG, 7)).items() if not k.startswith("head.")
    }
    got = _weights(framework, model)
    assert set(got) == set(want)
    assert all(np.array_equal(got[k], v) for k, v in want.items())


def test_a_backbone_file_has_no_head(tmp_path):
    import zoo.models as models

    backbone = dataclasses.replace(CONFIG, features_only=True)
    path = default_maker("official", "swin")(tmp_path / "b", backbone, 1)
    assert models.load_model(path).config.features_only
    with pytest.raises(errors.WrongModelError, match="no classifier head"):
        models.load_model(path, features_only=False)


def test_allow_missing_keeps_the_initialization(tmp_path):
    import torch

    import zoo.models as models

    full = default_maker("official", "swin")(tmp_path / "s", CONFIG, 2)
    checkpoint = torch.load(full, weights_only=True)
    gone = "layers.0.blocks.0.mlp.fc1.bias"
    del checkpoint["model"][gone]
    torch.save(checkpoint, tmp_path / "partial.pth")
    with pytest.raises(errors.MissingKeysError, match=gone):
        models.load_model(tmp_path / "partial.pth")
    model = models.load_model(tmp_path / "partial.pth", allow_missing=[gone])
    want = state_dict(reference_model(CONFIG, 2))
    got = state_dict(model)
    assert all(np.array_equal(got[k], want[k]) for k in want if k != gone)
    assert not np.array_equal(got[gone], want[gone])


def test_errors_are_the_clis(tmp_path):
    """A file that is no checkpoint raises the CLI's error kind, with its exit code."""
    import zoo.models as models

    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(errors.NotACheckpointError) as info:
        models.load_model(bad)
    assert info.value.exit_code == 6
    with pytest.raises(errors.MissingFileError):
        models.load_model(tmp_path / "absent.pth")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_named_features_from_a_checkpoint(tmp_path, framework):
    """``features=[...]`` with a checkpoint: the weights are the file's, the model returns the
    named outputs in the order asked (a list taken as a tuple); an output the model does not
    have is the CLI's ``UsageError``, naming the ones it has."""
    config = FAMILIES["convnet"].tiny
    pth = default_maker("official", "convnet")(tmp_path / "convnet", config, 5)
    models = _models(framework)
    model = models.create_model(checkpoint=pth, features=["fc1", "conv2"])
    assert model.config.features == ("fc1", "conv2")
    want = state_dict(reference_model(config, 5))
    got = _weights(framework, model)
    assert set(got) == set(want) and all(np.array_equal(got[k], v) for k, v in want.items())
    x = np.zeros((1, 12, 12, 1) if framework != "torch" else (1, 1, 12, 12), np.float32)
    if framework == "torch":
        import torch

        x = torch.from_numpy(x)
    assert list(model(x)) == ["fc1", "conv2"]
    with pytest.raises(errors.UsageError, match=r"unknown \['layer1'\]; ConvNet returns: conv1"):
        models.create_model(checkpoint=pth, features=["layer1"])

"""Flax NNX models: serialization, jit and features mode, on the families' tiny configs given as
variant overrides. Parity and the state-path mirror of every family: the shared suite
(family_suite.py)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from weight_convert.frameworks import flax_port
from zoo.configs import VARIANTS, config_to_dict
from zoo.registry import FAMILIES

SWIN = "swin_tiny_patch4_window7_224"
VIDEO = "video_swin_tiny"


#: variant -> (the family's tiny config as overrides, port input shape channels-last)
def _tiny(family: str) -> dict:
    fields = dataclasses.asdict(FAMILIES[family].tiny)
    return {k: v for k, v in fields.items() if k != "features_only"}  # a case of its own


SMALL = {SWIN: (_tiny("swin"), (2, 30, 45, 3)), VIDEO: (_tiny("video_swin"), (1, 5, 30, 37, 3))}
HEAD = {SWIN: "head", VIDEO: "cls_head"}


def _model(name, seed=0, **extra):
    from ports.flax.models import create_model

    return create_model(name, rngs=nnx.Rngs(seed), **SMALL[name][0], **extra)


def _input(name, seed=1):
    return np.random.default_rng(seed).standard_normal(SMALL[name][1], dtype=np.float32)


def _ceil_div(a, b):
    return -(-a // b)


@pytest.mark.parametrize("name", [SWIN, VIDEO])
def test_create_model_applies_overrides_and_eval(name):
    model = _model(name)
    assert model.config == dataclasses.replace(VARIANTS[name].config, **SMALL[name][0])
    dropouts = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Dropout)]
    assert dropouts and all(m.deterministic for m in dropouts)


def test_create_model_unknown_variant():
    from ports.flax.models import create_model
    from zoo.configs import UnknownVariantError

    for bad in ("no_such_variant", None):
        with pytest.raises(
            UnknownVariantError, match=f"^unknown variant {bad!r}; .*known variants: "
        ):
            create_model(bad)


def test_create_model_takes_a_solved_config():
    """A custom checkpoint's solved config builds directly, and as its nearest variant with the
    overrides ``detect`` gives: the model's variables are the checkpoint's tensors, shape for
    shape (``sources.port_to_reference`` is strict both ways)."""
    from ports.flax.models import create_model
    from weight_convert import layouts
    from weight_convert.sources import port_to_reference
    from zoo.configs import reference_shapes

    config = FAMILIES["video_swin"].tiny  # no variant; the shapes the other tests compile
    shapes = reference_shapes(config)
    sd = layouts.from_reference(
        {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}, "official", "video_swin"
    )
    detected = layouts.detect(sd)
    assert detected.variant is None and detected.config == config
    model = create_model(detected.nearest_variant, **detected.overrides())
    assert model.config == config
    reference, _ = port_to_reference(flax_port.read(model), config)
    assert {k: v.shape for k, v in reference.items()} == shapes
    assert create_model(config, num_classes=3).config == dataclasses.replace(config, num_classes=3)


@pytest.mark.parametrize("name", [SWIN, VIDEO])
def test_save_load_round_trip(name, tmp_path):
    from ports.flax import serialization

    model = _model(name, seed=3)
    path = tmp_path / "model.safetensors"
    serialization.save(model, path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]  # no temporary left behind

    metadata = serialization.read_metadata(path)
    assert metadata["model"] == type(model).__name__
    assert json.loads(metadata["config"]) == json.loads(json.dumps(config_to_dict(model.config)))

    loaded = serialization.load(path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    before, after = flax_port.read(model), flax_port.read(loaded)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    x = [_input(name)]
    np.testing.assert_array_equal(flax_port.jit_call(model, x), flax_port.jit_call(loaded, x))

    serialization.save(loaded, path)  # overwriting an existing file
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def _tamper(path, out, edit):
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    edit(arrays)
    save_file(arrays, str(out), metadata=metadata)


def test_load_rejects_mismatched_files(tmp_path):
    from ports.flax import serialization

    model = _model(SWIN)
    path = tmp_path / "model.safetensors"
    serialization.save(model, path)
    qkv = "layers.0.blocks.1.attn.qkv.kernel"

    missing = tmp_path / "missing.safetensors"
    _tamper(path, missing, lambda a: a.pop(qkv))
    with pytest.raises(serialization.CheckpointMismatchError, match=r"1 missing key\(s\): " + qkv):
        serialization.load(missing)

    extra = tmp_path / "extra.safetensors"
    _tamper(path, extra, lambda a: a.update({"layers.9.bogus": np.zeros(3, np.float32)}))
    with pytest.raises(serialization.CheckpointMismatchError, match="unexpected.*layers.9.bogus"):
        serialization.load(extra)

    shape = tmp_path / "shape.safetensors"
    _tamper(path, shape, lambda a: a.update({qkv: a[qkv][:, :-1].copy()}))
    with pytest.raises(serialization.CheckpointMismatchError, match=r"shape mismatch.*" + qkv):
        serialization.load(shape)

    bare = tmp_path / "bare.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, str(bare))
    with pytest.raises(ValueError, match="not a ports.flax model file"):
        serialization.load(bare)


def test_failed_load_weights_changes_nothing(tmp_path):
    from ports.flax import serialization

    model = _model(SWIN, seed=1)
    path = tmp_path / "model.safetensors"
    serialization.save(model, path)
    bad = tmp_path / "bad.safetensors"
    _tamper(path, bad, lambda a: a.pop("head.bias"))
    other = _model(SWIN, seed=2)
    before = flax_port.read(other)
    with pytest.raises(serialization.CheckpointMismatchError):
        serialization.load_weights(other, bad)
    after = flax_port.read(other)
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", [SWIN, VIDEO])
def test_jit_matches_eager(name):
    model = _model(name)
    x = [_input(name)]
    with flax_port.numerics():
        eager = flax_port.call(model, x)
        jitted = flax_port.jit_call(model, x)
    assert isinstance(eager, np.ndarray) and eager.shape == (SMALL[name][1][0], 10)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [SWIN, VIDEO])
def test_features_only(name):
    model = _model(name, features_only=True)
    paths = flax_port.shapes(model)
    head = HEAD[name]
    assert not any(p.split(".")[0] == head for p in paths)
    assert not hasattr(model, head)

    shape = SMALL[name][1]
    config = model.config
    x = [_input(name)]
    with flax_port.numerics():
        maps = flax_port.jit_call(model, x)
        eager = flax_port.call(model, x)
    assert isinstance(maps, list) and len(maps) == len(config.depths)
    spatial = [_ceil_div(s, p) for s, p in zip(shape[1:-1], config.patch_size, strict=True)]
    for i, (m, e) in enumerate(zip(maps, eager, strict=True)):
        assert m.shape == (shape[0], *spatial, config.stage_dims()[i]), (i, m.shape)
        np.testing.assert_allclose(m, e, rtol=1e-5, atol=1e-5)
        # PatchMerging halves the last two spatial axes (not time).
        spatial = spatial[:-2] + [_ceil_div(s, 2) for s in spatial[-2:]]

    # The same weights with a head: the head's input is the mean of the last (normed) map.
    full = _model(name)
    head_params = {f"{head}.{k}": v for k, v in flax_port.read(getattr(full, head)).items()}
    flax_port.assign(full, {**flax_port.read(model), **head_params})
    logits = flax_port.jit_call(full, x)
    pooled = maps[-1].reshape(shape[0], -1, maps[-1].shape[-1]).mean(axis=1)
    linear = head_params[f"{head}.kernel" if name == SWIN else f"{head}.fc_cls.kernel"]
    bias = head_params[f"{head}.bias" if name == SWIN else f"{head}.fc_cls.bias"]
    np.testing.assert_allclose(logits, pooled @ linear + bias, rtol=1e-4, atol=1e-4)

"""Keras models (ports.keras.models): saving, configs and features mode, on the families' tiny
configs given as variant overrides. Parity and the variable-path mirror of every family: the shared
suite (family_suite.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import keras
import numpy as np
import pytest

from ports.keras import models
from weight_convert.frameworks import keras_port
from zoo.configs import VARIANTS
from zoo.registry import FAMILIES, model_class

pytestmark = pytest.mark.keras


def _tiny(family: str) -> dict:
    """The family's tiny config as overrides of a variant."""
    fields = dataclasses.asdict(FAMILIES[family].tiny)
    return {k: v for k, v in fields.items() if k != "features_only"}  # a case of its own


#: (variant, overrides, channels-last input shape). Sizes are not multiples of the patch or
#: the window, so padding and window shrinking are covered.
CASES = {
    "swin": ("swin_tiny_patch4_window7_224", _tiny("swin"), (2, 38, 30, 3)),
    "video_swin": ("video_swin_tiny", _tiny("video_swin"), (1, 5, 22, 18, 3)),
}


def _randomized(model: keras.Model, seed: int = 0) -> keras.Model:
    """Every variable drawn from N(0, 0.1) (biases and norms too, so a load that missed one would
    show)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.1, tuple(v.shape)).astype(v.dtype))
    return model


def _build(case: str, **extra) -> tuple[keras.Model, np.ndarray]:
    name, overrides, shape = CASES[case]
    model = _randomized(models.create_model(name, **overrides, **extra))
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    return model, x


def _outputs(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    out = keras_port.call(model, [x])
    return out if isinstance(out, list) else [out]


@pytest.fixture(params=sorted(CASES))
def case(request) -> str:
    return request.param


def test_create_model_is_built_and_matches_the_variant(case):
    name, overrides, _ = CASES[case]
    model = models.create_model(name, **overrides)
    assert model.built and model.weights
    assert type(model).__name__ == VARIANTS[name].model
    assert model.config == dataclasses.replace(VARIANTS[name].config, **overrides)
    assert keras_port.build_model(model.config).config == model.config


def test_create_model_takes_a_solved_config():
    """A custom checkpoint (Swin window 5, as timm writes it) builds as its nearest variant with
    the overrides ``detect`` gives, and from its config directly: the model's variables are the
    checkpoint's tensors, shape for shape (``sources.port_to_reference`` is strict both ways).
    ``create_model(None)`` names the known variants."""
    from weight_convert import layouts
    from weight_convert.sources import port_to_reference
    from zoo.configs import UnknownVariantError, reference_shapes

    config = dataclasses.replace(FAMILIES["swin"].tiny, window_size=(5, 5))
    shapes = reference_shapes(config)
    zeros = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    detected = layouts.detect(layouts.from_reference(zeros, "timm", "swin"))
    assert (detected.variant, detected.config) == (None, config)
    model = models.create_model(detected.nearest_variant, **detected.overrides())
    assert model.config == config
    reference, _ = port_to_reference(keras_port.read(model), config)
    assert {k: v.shape for k, v in reference.items()} == shapes
    assert models.create_model(config).config == config
    with pytest.raises(UnknownVariantError, match="^unknown variant None; .*known variants: "):
        models.create_model(None)


def test_keras_file_round_trip(case, tmp_path):
    model, x = _build(case)
    expected = _outputs(model, x)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert loaded.name == model.name
    assert keras_port.shapes(loaded) == keras_port.shapes(model)
    for got, want in zip(_outputs(loaded, x), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_file_round_trip(case, tmp_path):
    model, x = _build(case)
    expected = _outputs(model, x)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    name, overrides, _ = CASES[case]
    fresh = models.create_model(name, **overrides)
    fresh.load_weights(path)
    before = keras_port.read(model)
    after = keras_port.read(fresh)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    for got, want in zip(_outputs(fresh, x), expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("features_only", [False, True])
def test_config_round_trip(case, features_only):
    name, overrides, _ = CASES[case]
    config = dataclasses.replace(VARIANTS[name].config, **overrides, features_only=features_only)
    model = model_class(config, "keras")(config, name="m")
    stored = json.loads(json.dumps(model.get_config()))  # what a .keras file stores
    assert stored["name"] == "m"
    clone = type(model).from_config(stored)
    assert clone.config == model.config
    assert clone.name == "m"
    # the registered name resolves to the class
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert type(restored) is type(model) and restored.config == model.config


def test_features_only(case):
    name, overrides, shape = CASES[case]
    model, x = _build(case, features_only=True)
    paths = keras_port.shapes(model)
    assert not [p for p in paths if p.split(".")[0] in ("head", "cls_head")]
    features = _outputs(model, x)
    config = model.config
    assert len(features) == len(config.depths)
    sizes = [math.ceil(s / p) for s, p in zip(shape[1:-1], config.patch_size, strict=True)]
    for i, (feature, dim) in enumerate(zip(features, config.stage_dims(), strict=True)):
        assert feature.shape == (shape[0], *sizes, dim), i
        # PatchMerging halves the last two spatial axes (rounding up); time is kept
        sizes = [*sizes[:-2], *(math.ceil(s / 2) for s in sizes[-2:])]

    # with the same backbone weights, logits = head(mean of the last map over positions)
    classifier = _randomized(models.create_model(name, **overrides))
    keras_port.assign(classifier, keras_port.read(model))
    weights = keras_port.read(classifier)
    assert len(weights) == len(paths) + 2
    head = "cls_head.fc_cls" if case == "video_swin" else "head"
    pooled = features[-1].reshape(shape[0], -1, features[-1].shape[-1]).mean(axis=1)
    expected = pooled @ weights[f"{head}.kernel"] + weights[f"{head}.bias"]
    np.testing.assert_allclose(_outputs(classifier, x)[0], expected, rtol=1e-5, atol=1e-5)

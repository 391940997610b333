"""The mirror-tree check (``weight_convert.mirror``, run by the shared suite on every family) can
fail: a port sublayer under another name than the reference's attribute, or variables in another
order, is reported with the path that drifted."""

from __future__ import annotations

import pytest
from family_suite import reference_model

from weight_convert.frameworks.reference import state_dict
from weight_convert.mirror import mirror_differences, nnx_order
from zoo.registry import FAMILIES

TINY = FAMILIES["swin"].tiny


def _reference_keys() -> list[str]:
    return list(state_dict(reference_model(TINY)))


@pytest.mark.keras
def test_renamed_keras_sublayer_is_caught():
    from ports.keras.models import build_model
    from weight_convert.frameworks import keras_port
    from zoo.configs import family_of
    from zoo.registry import model_class

    assert (
        mirror_differences(_reference_keys(), list(keras_port.shapes(build_model(TINY))), "keras")
        == []
    )
    model = model_class(TINY, "keras")(TINY)
    model.stages[1].blocks[0].mlp.fc2.name = "fc_2"  # named unlike the reference attribute
    model.build(family_of(TINY).port_build_shape(TINY))
    problems = mirror_differences(_reference_keys(), list(keras_port.shapes(model)), "keras")
    assert "layers.1.blocks.0.mlp.fc2.weight" in problems[0]
    assert "layers.1.blocks.0.mlp.fc_2.kernel" in problems[1]


def test_renamed_flax_attribute_is_caught():
    from ports.flax.models import abstract_model
    from weight_convert.frameworks import flax_port

    model = abstract_model(TINY)
    assert mirror_differences(_reference_keys(), list(flax_port.shapes(model)), "flax") == []
    model.norm_final = model.norm  # an attribute the reference does not have
    del model.norm
    problems = mirror_differences(_reference_keys(), list(flax_port.shapes(model)), "flax")
    assert "'norm.weight'" in problems[0] and "'norm_final.scale'" in problems[1]


def test_order_drift_is_caught():
    keys = _reference_keys()
    paths = [k.replace(".weight", ".kernel") if "qkv" in k else k for k in keys]
    assert mirror_differences(keys, paths, "keras") == []
    swapped = [paths[1], paths[0], *paths[2:]]
    (problem,) = mirror_differences(keys, swapped, "keras")
    assert problem.startswith("order differs from position 0")
    assert mirror_differences(keys, swapped, "flax") == [
        "the Flax paths are not in NNX's state order"
    ]
    assert mirror_differences(keys, sorted(paths, key=nnx_order), "flax") == []


def test_two_variables_on_one_key_are_reported():
    problems = mirror_differences(
        ["a.weight", "b.weight"], ["a.kernel", "b.kernel", "b.weight"], "keras"
    )
    assert problems == ["two port variables map to one reference key"]

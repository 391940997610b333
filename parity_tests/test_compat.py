"""``zoo.compat``: each framework internal the zoo relies on has a version guard and a public
fallback. On the installed (tested) versions the internals are used; outside the tested range, or
with ``forced_fallbacks()``, the fallback gives the same result (or, for the call interception,
a parity run that still compares every output)."""

from __future__ import annotations

import numpy as np
import pytest
from family_suite import port_model, reference_model

from zoo import compat
from zoo.registry import FAMILIES

TINY = FAMILIES["swin"].tiny


def test_installed_versions_are_the_tested_ones():
    """CI runs the internal paths: every guarded framework is inside its tested range."""
    for dist in compat.TESTED:
        assert compat.supported(dist), (dist, compat._installed(dist), compat.TESTED[dist])


def test_version_ranges():
    low, high = compat.TESTED["keras"]
    assert compat.supported("keras", low)
    assert compat.supported("keras", low + ".7")
    assert not compat.supported("keras", high)
    assert not compat.supported("keras", "2.15.0")
    with compat.forced_fallbacks():
        assert not compat.supported("keras", low)


def test_untested_version_warns_and_falls_back(monkeypatch):
    monkeypatch.setitem(compat.TESTED, "flax", ("0.1", "0.2"))
    compat._warn.cache_clear()
    with pytest.warns(compat.CompatWarning, match=r"flax .* outside the versions"):
        assert compat._internal("flax", "something") is False
    compat._warn.cache_clear()


@pytest.mark.keras
def test_keras_sublayers_fallback_finds_the_same_layers():
    """On a whole model (a hand-made net: test_harness.py)."""
    from ports.keras.models import build_model

    model = build_model(TINY)
    internal = compat.keras_sublayers(model)
    with compat.forced_fallbacks():
        public = compat.keras_sublayers(model)
    assert [(p, id(layer)) for p, layer in public] == [(p, id(layer)) for p, layer in internal]
    assert len(public) > 20 and "layers-1/blocks-0/attn/qkv" in dict(public)


@pytest.mark.keras
def test_keras_streamed_save_fallback_writes_the_same_weights(tmp_path):
    import keras

    import ports.keras.models  # noqa: F401  (registers the classes for loading)
    from ports.keras.models import build_model
    from weight_convert.frameworks import keras_port

    source = build_model(TINY)
    values = keras_port.read(source)

    def save(directory):
        directory.mkdir()
        model = keras_port.abstract_model(TINY)
        keras_port.save_streamed(
            model,
            directory / "m.weights.h5",
            directory / "m.keras",
            values.__getitem__,
            lambda: build_model(TINY),
        )
        return keras_port.read(keras.saving.load_model(directory / "m.keras"))

    internal = save(tmp_path / "internal")
    with compat.forced_fallbacks():
        public = save(tmp_path / "public")
    assert internal.keys() == public.keys() == values.keys()
    for path, value in values.items():
        assert np.array_equal(internal[path], value) and np.array_equal(public[path], value), path


def _parity(port):
    from weight_convert import parity
    from zoo.configs import family_of

    inputs, formats = family_of(TINY).make_inputs(TINY, (1, 3, 32, 32))
    return parity.compare(
        reference_model(TINY),
        port_model(port, TINY),
        port,
        inputs,
        formats,
        tolerance=parity.MODEL_TOLERANCE,
    )


def test_call_interception_fallback_compares_outputs_only(port):
    with_layers = _parity(port)
    assert with_layers.passed and with_layers.layers
    with compat.forced_fallbacks():
        outputs_only = _parity(port)
    assert outputs_only.passed and outputs_only.outputs and not outputs_only.layers
    assert "outputs compared only" in outputs_only.settings["layer capture"]
    assert "layer capture" not in with_layers.settings

"""The MNIST ConvNet in the shared suite, and the one trap particular to it: the ports' map is
channels-last (H, W, C) where fc1's rows follow the reference's (C, H, W) flattening. The ports
flatten in the reference's order (``flatten_channels_first``), so fc1 converts as every linear
layer does. Training it from scratch in the three frameworks: test_convnet_training.py."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from family_suite import FamilySuite, ParityCase, port_model, reference_model


class TestConvNet(FamilySuite):
    family = "convnet"
    cases = (
        ParityCase("12", (1, 1, 12, 12)),
        ParityCase("odd-b3-13", (3, 1, 13, 13)),  # the pool drops the last row and column
    )

    def test_fc1_converts_as_a_plain_transpose(self, port):
        """Reference -> port -> reference is bit-identical, and the port's fc1 kernel is
        ``fc1.weight.T`` (no row permutation: the port flattens in the reference's order)."""
        from weight_convert import transfer
        from weight_convert.frameworks.reference import state_dict

        config = self.tiny()
        state = state_dict(reference_model(config, seed=3))
        model = port_model(port, config)
        port.assign(model, transfer.to_port(state, port.shapes(model)))
        values = port.read(model)
        assert np.array_equal(values["fc1.kernel"], state["fc1.weight"].T)
        back = transfer.to_torch(values)
        assert set(back) == set(state)
        for key, value in state.items():
            assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key

    def test_channels_last_flatten_fails_at_fc1(self, port, monkeypatch):
        """A port flattening its (H, W, C) map as it lies (the Keras / Flax habit) permutes fc1's
        inputs: parity fails at fc1, every layer before it passing."""
        framework = port.NAME.split("-")[0]
        module = importlib.import_module(f"ports.{framework}.models.convnet")

        def flatten_as_it_lies(x):
            if framework == "keras":
                from keras import ops

                return ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
            return x.reshape(x.shape[0], -1)

        monkeypatch.setattr(module, "flatten_channels_first", flatten_as_it_lies)
        report = self.run_parity(port, self.tiny())
        assert not report.passed
        assert report.first_failure.path == "fc1", report.table()
        before = report.layers[: report.layers.index(report.first_failure)]
        assert before and all(not e.exceeded for e in before)

    def test_image_size_must_pool_to_fc1(self, framework):
        """fc1 takes a fixed number of features: an image that pools to another map is refused
        before the first layer, naming the sizes that run (12 and 13 for the tiny config)."""
        config = self.tiny()
        x, _ = self.spec().make_inputs(config, (2, 1, 13, 13))
        assert tuple(self._call(framework, x, symbolic=True).shape) == (2, config.num_classes)
        x, _ = self.spec().make_inputs(config, (2, 1, 16, 16))
        with pytest.raises(ValueError, match=r"ConvNet.*16x16 image pools to 6x6 .*feed 12 x 12"):
            self._call(framework, x)


@pytest.mark.parametrize(
    ("name", "fc1_in"), [("mnist_convnet", 4608), ("mnist_convnet_examples", 9216)]
)
def test_variants_are_detected_from_their_shapes(name, fc1_in):
    """A state dict of each variant's shapes (``mnist_convnet_examples``: pytorch/examples'
    ``Net``, as ``mnist_cnn.pt`` holds it) names the variant, with its dropout rates; an fc1
    width that is no square map of conv2's channels is refused."""
    from weight_convert import layouts
    from zoo.configs import VARIANTS, reference_shapes

    config = VARIANTS[name].config
    shapes = reference_shapes(config)
    assert shapes["fc1.weight"][1] == fc1_in
    detected = layouts.detect({k: np.zeros(s, np.float32) for k, s in shapes.items()})
    assert (detected.layout, detected.family, detected.variant) == ("official", "convnet", name)
    assert detected.config == config
    bad = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    bad["fc1.weight"] = np.zeros((config.hidden, fc1_in + config.channels[1]), np.float32)
    with pytest.raises(layouts.LayoutError, match="not .* channels .* times a square map"):
        layouts.detect(bad)

"""ResNet in the shared suite (tiny Bottleneck config; BasicBlock as a case), and what is
particular to it: BatchNorm's eps trap named at its layer, the max-pool's -inf padding, feature
outputs, timm files (the same keys as torchvision's), and the peers: torchvision's and timm's
own ResNet code with every tensor random (running statistics too), in eval and training mode.

CI runs the peers' code on small ResNets of their own classes (one block per stage, full
widths); torchvision ``resnet50`` / ``resnet152`` and timm ``resnet50`` at 224 and 225 x 191 are
``slow``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from family_suite import FamilySuite, ParityCase, keras_on_tensorflow_only, reference_model

from weight_convert.parity import MODEL_TOLERANCE
from weight_convert.tolerance import Tolerance

#: running statistics of a whole model after a training step, port vs reference: max abs error
#: <= STAT_RTOL x max |reference statistic| per tensor (deep layers' batch statistics carry the
#: activations' float32 rounding; the block test holds one layer to 1e-6)
STAT_RTOL = 1e-5


class TestResNet(FamilySuite):
    family = "resnet"
    cases = (
        # the first case is also test_gradients' (training mode): 48 x 40, batch 2 leaves
        # layer4's BatchNorms 8 values per channel (2 x 2 x 2); at 32 x 32 they have 2, where
        # the batch variance's backward is so ill-conditioned that float32 rounding alone
        # reaches 4e-4 relative (measured in Flax: 2.8e-5 at 64 x 64, 4.0e-4 at 32 x 32)
        ParityCase("bottleneck-b2-48x40", (2, 3, 48, 40)),
        # conv1 17x15 -> maxpool 9x8 -> 5x4 -> 3x2 -> 2x1: odd sides at every stride
        ParityCase("bottleneck-odd-33x29", (1, 3, 33, 29)),
        ParityCase("basic-odd-b2-45x37", (2, 3, 45, 37), overrides={"block": "basic"}),
    )

    @classmethod
    def layouts(cls) -> list[str]:
        """torchvision's only: timm's files have the same keys, so detection names
        torchvision (``test_timm_files_convert`` converts a file timm's code wrote)."""
        return ["torchvision"]

    def test_planted_eps_names_the_layer(self, port):
        """Keras's BatchNorm eps (1e-3) in the port, in every BatchNorm: parity fails at
        ``bn1``, conv1 before it passing; in one BatchNorm deep in the net: parity fails at
        that layer, everything before it passing."""
        keras_on_tensorflow_only(port.NAME)
        config = self.tiny()
        for only in (None, "layer2.0.bn2"):

            def plant(model, only=only) -> None:
                for path, layer in _batchnorms(port, model):
                    if only is None or path == only:
                        layer.eps = 1e-3

            report = self.run_parity(port, config, after_transfer=plant)
            assert not report.passed
            first = report.first_failure
            assert first.path == (only or "bn1"), report.table()
            before = report.layers[: report.layers.index(first)]
            assert before and all(not e.exceeded for e in before)

    def test_features_stop_at_the_last_one(self):
        """A ``features`` model computes nothing past the last output asked for (layer4 never
        runs for features up to layer3); the outputs come in the order asked."""
        x, _ = self.spec().make_inputs(self.tiny(), (2, 3, 33, 29))
        early = reference_model(self.tiny(features=("layer3", "bn1")))
        calls = []
        early.layer4.register_forward_hook(lambda *a: calls.append(1))
        assert list(_torch_call(early, x[0])) == ["layer3", "bn1"] and not calls


# --------------------------------------------------------------------------- helpers


def _batchnorms(port, model):
    """(port path, layer) of every BatchNorm2d of a port model."""
    if port.NAME == "flax":
        from flax import nnx

        from ports.flax.layers import BatchNorm2d

        return [
            (".".join(map(str, p)), n)
            for p, n in nnx.iter_graph(model)
            if isinstance(n, BatchNorm2d)
        ]
    from ports.keras.layers import BatchNorm2d
    from zoo import compat

    return [
        (p.replace("/", ".").replace("-", "."), layer)
        for p, layer in compat.keras_sublayers(model)
        if isinstance(layer, BatchNorm2d)
    ]


def _torch_call(model, x: np.ndarray, training: bool = False):
    import torch

    model.train(training)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    model.eval()
    if isinstance(out, dict):
        return {k: v.numpy() for k, v in out.items()}
    return out.numpy()


def _port_call(port, model, x: np.ndarray):
    if port.NAME == "flax":
        import jax.numpy as jnp

        out = port.mode(model, False)(jnp.asarray(x))
    else:
        import keras

        out = model(x, training=False)
        out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return {k: np.asarray(v) for k, v in out.items()}


def _build(framework: str, config):
    if framework == "torch":
        import zoo.models

        return zoo.models.build_model(config)
    if framework == "keras":
        import ports.keras.models

        return ports.keras.models.build_model(config)
    import ports.flax.models

    return ports.flax.models.abstract_model(config)


# --------------------------------------------------------------------------- max-pool padding


@pytest.mark.parametrize("zero_padding", [False, True], ids=["minus-inf", "planted-zeros"])
def test_max_pool_pads_with_minus_inf(port, zero_padding, monkeypatch):
    """The stem's 3x3 / 2 / 1 max-pool at 225 x 191 on N(0, 1) input: the port equals
    ``nn.MaxPool2d`` (max abs 1e-5, here exact); padding with zeros (the planted bug) changes
    the border windows whose values are all negative and fails. (Inside ResNet the pool follows
    a ReLU, where zeros would hide: this is why the block is checked alone.)"""
    import importlib

    import zoo
    from weight_convert.parity import run_case

    case = zoo.BLOCKS["MaxPool2d"][0]
    assert case.inputs[0].shape[2:] == (225, 191)
    if zero_padding:
        framework = port.NAME.split("-")[0]
        monkeypatch.setattr(
            importlib.import_module(f"ports.{framework}.layers.pool"), "PAD_VALUE", 0.0
        )
    report = run_case(case, port)
    assert report.passed is not zero_padding, report.table()
    if not zero_padding:
        assert report.outputs[0].max_abs == 0.0


# --------------------------------------------------------------------------- peers


def _randomized(peer, seed: int = 0):
    """``peer`` with every parameter and every BatchNorm statistic random (``randomize_``)."""
    from weight_convert.frameworks.reference import randomize_

    return randomize_(peer, seed).eval()


def _reference_from(peer):
    """The reference built from ``peer``'s state dict (config detected from the shapes), loaded
    strictly."""
    import torch

    import zoo.models
    from weight_convert import layouts

    sd = {k: v.detach().numpy() for k, v in peer.state_dict().items()}
    detected = layouts.detect(sd)
    assert (detected.layout, detected.family) == ("torchvision", "resnet")
    ours = zoo.models.build_model(detected.config)
    reference = layouts.to_reference(sd, detected)
    ours.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in reference.items()})
    return ours.eval()


def _small_torchvision(kind: str):
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[kind]
    return ResNet(block, [1, 1, 1, 1], num_classes=10)


def _small_timm(kind: str):
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[kind]
    return ResNet(block, [1, 1, 1, 1], num_classes=10)


def _assert_peer_agrees(peer, ours, shape, training: bool = False, steps: int = 1) -> None:
    """Outputs (max abs <= 1e-4 x output std; in fact exact: the same ops) and, in training
    mode, every BatchNorm statistic after ``steps`` steps bit-identical to the peer's."""
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = rng.standard_normal(shape, dtype=np.float32)
        want, got = _torch_call(peer, x, training), _torch_call(ours, x, training)
        assert np.max(np.abs(want - got)) <= 1e-4 * np.std(want)
    if training:
        theirs, mine = peer.state_dict(), ours.state_dict()
        for key in theirs:
            if "running" in key or "num_batches" in key:
                assert np.array_equal(theirs[key].numpy(), mine[key].numpy()), key


@pytest.mark.parametrize(
    ("library", "kind"),
    [("torchvision", "bottleneck"), ("torchvision", "basic"), ("timm", "bottleneck")],
)
def test_small_peers(library, kind):
    """torchvision's / timm's own ResNet class (one block per stage, full widths, every tensor
    random): its state dict is detected and loaded strictly into the reference, which agrees in
    eval mode at 64 x 64 and 65 x 47 and in training mode over two steps (outputs, and
    running_mean / running_var / num_batches_tracked identical)."""
    make = _small_torchvision if library == "torchvision" else _small_timm
    peer = _randomized(make(kind))
    ours = _reference_from(peer)
    for shape in ((2, 3, 64, 64), (1, 3, 65, 47)):
        _assert_peer_agrees(peer, ours, shape)
    _assert_peer_agrees(peer, ours, (2, 3, 40, 36), training=True, steps=2)


#: the full-depth training-mode bound (slow test): 2e-4 x each tensor's max |reference|. Batch
#: statistics renormalize every layer's float32 rounding, and where a channel's batch mean is
#: large beside its spread the subtraction amplifies it: through resnet50's 53 BatchNorms at
#: 128 x 96 the errors grew to 2.6e-4 x std (4.2e-5 x max, layer4.1 in Flax; Keras-TF alike),
#: where eval mode stays within the 1e-4 x std model bound at 224 and 225 x 191
DEEP_TRAINING_TOLERANCE = Tolerance(atol=0.0, rmax=2e-4)


def _ports_agree(ours, port, shape, training: bool = False, tolerance=MODEL_TOLERANCE):
    """The port with the reference's weights against the reference on one input: every layer
    and output within 1e-4 x its std; in training mode also every running statistic after the
    step (``STAT_RTOL``) and num_batches_tracked exactly."""
    from weight_convert import transfer
    from weight_convert.frameworks.reference import state_dict
    from weight_convert.parity import compare

    config = ours.config
    inputs, formats = _spec().make_inputs(config, shape)
    model = port.build_model(config, initialize=False)
    report = compare(ours, model, port, inputs, formats, tolerance=tolerance, training=training)
    assert report.passed and not report.unmatched, report.table()
    if training:
        want = state_dict(ours)
        got = transfer.to_torch(port.read(model))
        stats = [k for k in want if "running" in k or "num_batches" in k]
        for key in stats:
            if "num_batches" in key:
                assert got[key].dtype == np.int64 and got[key] == want[key], key
                continue
            error = np.max(np.abs(got[key] - want[key])) / np.max(np.abs(want[key]))
            assert error <= STAT_RTOL, (key, error)


def _spec():
    from zoo.registry import FAMILIES

    return FAMILIES["resnet"]


def test_ports_on_small_torchvision_weights(port):
    """The ports holding a (small, full-width) torchvision ResNet's random weights agree with
    the reference at 65 x 47 in eval mode, and in training mode (batch statistics, running
    statistics updated)."""
    keras_on_tensorflow_only(port.NAME)
    ours = _reference_from(_randomized(_small_torchvision("bottleneck")))
    _ports_agree(ours, port, (1, 3, 65, 47))
    _ports_agree(ours, port, (2, 3, 40, 36), training=True)


def test_timm_files_convert(tmp_path):
    """A file timm's own ResNet code wrote: detected (as torchvision's layout, saying timm's is
    identical), converted to Keras, Flax and back to the timm layout, every tensor
    bit-identical (num_batches_tracked int64 again)."""
    import torch
    from family_suite import assert_same_checkpoint

    from weight_convert import convert

    peer = _randomized(_small_timm("basic"))
    with torch.no_grad():
        peer.layer1[0].bn1.num_batches_tracked.fill_(2**31 - 1)  # the largest int32 survives
    source = tmp_path / "timm_resnet.pth"
    torch.save(peer.state_dict(), source)
    keras_summary, _ = convert.convert(str(source), "keras", tmp_path / "m")
    assert (keras_summary.detected["layout"], keras_summary.detected["family"]) == (
        "torchvision",
        "resnet",
    )
    assert "identical under timm too" in keras_summary.detected["notes"]
    flax_summary, _ = convert.convert(keras_summary.outputs[0], "flax", tmp_path / "m")
    back = tmp_path / "back.pth"
    summary, _ = convert.convert(flax_summary.outputs[0], "torch", back, layout="timm")
    assert summary.layout == "timm"
    assert_same_checkpoint(str(back), str(source))
    peer.load_state_dict(torch.load(back), strict=True)


# --------------------------------------------------------------------------- full size (slow)


def _full(library: str, name: str):
    if library == "timm":
        import timm

        return timm.create_model(name)
    import torchvision

    return getattr(torchvision.models, name)()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("library", "name"),
    [("torchvision", "resnet50"), ("torchvision", "resnet152"), ("timm", "resnet50")],
)
def test_full_size_peers(library, name, port):
    """The variants against their peers at full size, every tensor random: the reference
    (strict load, the variant detected) agrees with the peer at 224 and 225 x 191; the port
    agrees with the reference there (every layer within 1e-4 x std); resnet50 also in training
    mode at 128 x 96, batch 2 (running statistics after the step; at 64 x 48 layer3 / layer4
    normalize 24 / 8 values per channel and float32 rounding through 50 layers of batch
    statistics reached 1.2x the bound at layer3.3 in Flax)."""
    peer = _randomized(_full(library, name))
    ours = _reference_from(peer)
    from weight_convert import layouts

    sd = {k: v.detach().numpy() for k, v in peer.state_dict().items()}
    assert layouts.detect(sd).variant == name
    for shape in ((1, 3, 224, 224), (1, 3, 225, 191)):
        _assert_peer_agrees(peer, ours, shape)
        _ports_agree(ours, port, shape)
    if name == "resnet50":
        _assert_peer_agrees(peer, ours, (2, 3, 128, 96), training=True)
        _ports_agree(ours, port, (2, 3, 128, 96), training=True, tolerance=DEEP_TRAINING_TOLERANCE)


def test_resnet_features_names_cover_the_tree():
    """``feature_names`` lists every module path the contract names, in forward order, for
    every variant's block counts."""
    from zoo.configs import VARIANTS
    from zoo.families.resnet import feature_names

    config = VARIANTS["resnet50"].config
    names = feature_names(config)
    assert names[:5] == ("conv1", "bn1", "relu", "maxpool", "layer1.0")
    assert names[-4:] == ("layer4.2", "layer4", "avgpool", "fc")
    assert names.index("layer3.5") + 1 == names.index("layer3")
    assert len(names) == 4 + sum(config.layers) + 4 + 2
    assert dataclasses.replace(config, features=names).features == names

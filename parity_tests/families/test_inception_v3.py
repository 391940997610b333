"""Inception-v3 in the shared suite, and what is particular to it: pytorch-fid's FID blocks
(pooling that does not count the padding, ``Mixed_7c``'s max-pool branch), the input resize
every framework computes as ``F.interpolate`` does, torchvision's auxiliary head dropped on
reading, and the peers: pytorch-fid's and torchvision's own Inception code with every tensor
random (no download).

The tiny config keeps the whole topology (every block kind, every asymmetric kernel and
padding) at 1/16 of the widths: the suite's ~40 runs (parity on four targets, gradients,
float64, conversions, CLI, features) at full width would cost minutes; the widths change no
code path. The peers run at full width: pytorch-fid's model vs the reference on two 83 x 101
images (no resize) and torchvision's at 75 x 75 in CI; pytorch-fid's file in every framework at
299, the ports on its weights layer by layer, and the 256-photo FID / IS agreement
(``scripts/fid_parity.py``) are ``slow``.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from family_suite import (
    FamilySuite,
    ParityCase,
    default_maker,
    keras_on_tensorflow_only,
    reference_model,
)
from stochastic import without_randomness

from weight_convert.parity import MODEL_TOLERANCE

#: the resize's bound: max abs error against ``F.interpolate`` on [0, 1] images
RESIZE_ATOL = 1e-6


def _torchvision_maker(stem, config, seed: int) -> str:
    """A torchvision-layout file as its release has it: the reference's random tensors plus
    the auxiliary head ``AuxLogits.*`` (conv0 1x1 -> 128, conv1 5x5 -> 768, fc; at the config's
    widths, every BatchNorm statistic and counter included), which reading drops."""
    import torch

    path = default_maker("torchvision", "inception_v3")(stem, config, seed)
    sd = torch.load(path)
    rng = np.random.default_rng(seed)
    c768, c128 = config.width(768), config.width(128)

    def tensor(*shape):
        return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))

    for name, cin, cout, k in (("conv0", c768, c128, 1), ("conv1", c128, c768, 5)):
        sd[f"AuxLogits.{name}.conv.weight"] = tensor(cout, cin, k, k)
        for leaf in ("weight", "bias", "running_mean"):
            sd[f"AuxLogits.{name}.bn.{leaf}"] = tensor(cout)
        sd[f"AuxLogits.{name}.bn.running_var"] = tensor(cout).abs() + 0.5
        sd[f"AuxLogits.{name}.bn.num_batches_tracked"] = torch.tensor(7)
    sd["AuxLogits.fc.weight"] = tensor(config.num_classes, c768)
    sd["AuxLogits.fc.bias"] = tensor(config.num_classes)
    torch.save(sd, path)
    return path


#: the parity cases CI runs (the suite's ``cases``; the first is also the gradient case):
#: pytorch-fid's blocks where they differ most, Mixed_7b / 7c at 3 x 3 (139 x 139 after the
#: resize), where a max-pool, an average that counts the padding and one that does not give
#: three answers; the input resized up from an odd non-square size and mapped to [-1, 1];
#: batch 2 (training mode normalizes 18 values per channel at Mixed_7: at 75 x 75, batch 2, the
#: 2 values per channel at 1 x 1 made the batch variance's backward so ill-conditioned that
#: float32 rounding alone gave 2e-2 relative gradient errors)
CI_CASES = (
    ParityCase(
        "fid-resize-b2-61x97",
        (2, 3, 61, 97),
        {"fid": True, "resize_input": 139, "normalize_input": True},
    ),
)
#: the other parity cases (slow): torchvision's blocks at the 75 x 75 minimum (Mixed_7 at
#: 1 x 1), batch 2; its input transform at an odd non-square size (every stride floors,
#: Mixed_7 at 2 x 2)
SLOW_CASES = (
    ParityCase("torchvision-b2-75", (2, 3, 75, 75)),
    ParityCase("transform-odd-117x109", (1, 3, 117, 109), {"transform_input": True}),
)


#: the gradient and float64 case (slow): the FID blocks at 139 x 139 (Mixed_7 at 3 x 3), batch
#: 2, mapped to [-1, 1], no resize
GRADIENT_CASE = ParityCase("fid-b2-139", (2, 3, 139, 139), {"fid": True, "normalize_input": True})


class TestInceptionV3(FamilySuite):
    """The suite on the tiny config. Every suite test passes on every target; CI runs the
    checks that cost least per finding (its budget for this family is ~60 s over the three
    passes, and one run of the 94-conv tiny model through the harness costs 4-8 s, its
    gradient or float64 run 15-70 s): parity of the FID case on every target, the FID pooling
    plant, loading a torchvision file (AuxLogits dropped) in every framework, mirror tree,
    shape table, input checks. The other parity cases, gradients, float64, features, the
    generic planted bug, the round trip and the CLI run are ``slow``."""

    family = "inception_v3"
    cases = CI_CASES
    makers = {"torchvision": _torchvision_maker}

    @pytest.mark.slow
    @pytest.mark.parametrize("extra", SLOW_CASES, ids=[c.id for c in SLOW_CASES])
    def test_parity_more_cases(self, extra, port):
        super().test_parity(extra, port)

    @pytest.mark.slow
    def test_gradients(self, port):
        """Backward parity on ``GRADIENT_CASE``: in eval mode (what a loss through FID
        features backpropagates: BatchNorm on its running statistics) in float32 on every
        target, every parameter's and the input's gradient within the whole-model gradient
        bound; in training mode in float64 (Keras on TensorFlow, Flax) within 1e-10 x max.

        The suite's float32 training-mode run fails here on rounding alone: through 94
        BatchNorms normalizing a few channels (1/16 widths) on batch statistics, the
        gradients of the reference and a port differ by 2e-2 (batch 2, 75 x 75), 5e-2 (61 x 97
        resized to 139) and 9e-3 relative (batch 4, 171 x 171), while in float64 they agree
        to 2e-13 (Keras-TF, measured): the backward is the reference's, float32 cannot hold
        that conditioning."""
        from weight_convert.parity import run_config

        config = without_randomness(self.tiny(**GRADIENT_CASE.overrides))
        report = run_config(config, port, GRADIENT_CASE.shape, gradients=True, training=False)
        assert report.passed, report.table()
        names = [n for n, _ in reference_model(config).named_parameters()]
        assert [e.path for e in report.layers] == names and report.outputs
        if port.NAME in ("keras-jax", "keras-torch"):
            return  # Keras computes float32 there
        report = run_config(
            config, port, GRADIENT_CASE.shape, gradients=True, training=True, dtype="float64"
        )
        assert report.passed, report.table()
        assert report.settings["mode"] == "training"

    @pytest.mark.slow
    def test_float64(self, port):
        """The suite's float64 run on ``GRADIENT_CASE`` (no resize: the resize is PyTorch's
        float32 kernel, whose taps in float64 are computed in double)."""
        self.cases = (GRADIENT_CASE,)
        super().test_float64(port)

    @pytest.mark.slow
    def test_features(self, port):
        super().test_features(port)

    @pytest.mark.slow
    def test_planted_bug(self, port):
        super().test_planted_bug(port)

    @pytest.mark.slow
    def test_cli_verify(self, target, tmp_path, capsys):
        super().test_cli_verify(target, tmp_path, capsys)

    @pytest.mark.slow
    @pytest.mark.keras
    def test_round_trip(self, layout, tmp_path):
        """The suite's round trip (slow: CI reads the torchvision file, AuxLogits dropped, in
        every framework through test_load_checkpoint)."""
        super().test_round_trip(layout, tmp_path)

    @classmethod
    def layouts(cls) -> list[str]:
        """torchvision's only: pytorch-fid's files have the same keys, so detection names
        torchvision (``test_pytorch_fid_peer`` reads a file pytorch-fid's code wrote)."""
        return ["torchvision"]

    def test_fid_pooling_names_the_block(self, port, monkeypatch):
        """The FID config with the port's pooling branches planted back to torchvision's (zero
        padding counted, no max-pool): parity fails at ``Mixed_5b``, the first FIDInceptionA,
        every layer before it passing. Without the plant the case passes (test_parity). Keras
        on TensorFlow in CI; Flax (13 s: a compile) in ``test_fid_pooling_flax``, slow."""
        if port.NAME == "flax":
            pytest.skip("CI time: Keras on TensorFlow runs the plant; Flax's is slow")
        self._plant_torchvision_pooling(port, monkeypatch)

    @pytest.mark.slow
    def test_fid_pooling_flax(self, monkeypatch):
        from weight_convert.frameworks import port

        self._plant_torchvision_pooling(port("flax"), monkeypatch)

    def _plant_torchvision_pooling(self, port, monkeypatch) -> None:
        keras_on_tensorflow_only(port.NAME)
        module = importlib.import_module(f"ports.{port.NAME.split('-')[0]}.models.inception_v3")
        original = module.pool_branch
        monkeypatch.setattr(module, "pool_branch", lambda x, mode: original(x, "avg"))
        case = self.cases[0]
        report = self.run_parity(port, self.tiny(**case.overrides), case.shape)
        assert not report.passed
        first = report.first_failure
        assert first.path.startswith("Mixed_5b"), report.table()
        before = report.layers[: report.layers.index(first)]
        assert before and all(not e.exceeded for e in before)

    def test_small_images_refused(self, framework):
        """Without a resize the stem needs 75 x 75: a 74 x 80 image is refused before the
        first layer, naming the minimum and the way out."""
        x, _ = self.spec().make_inputs(self.tiny(), (1, 3, 74, 80))
        with pytest.raises(ValueError, match=r"InceptionV3: a 74x80 image is smaller .* 75 x 75"):
            self._call(framework, x)


# --------------------------------------------------------------------------- the resize

#: (in H, in W, out side): up and down from odd, even, non-square sizes, and the identity
RESIZES = [(61, 97, 139), (333, 401, 299), (300, 298, 299), (299, 299, 299), (75, 120, 77)]


def _resize_port(port_name: str):
    module = importlib.import_module(f"ports.{port_name.split('-')[0]}.models.inception_v3")
    if port_name == "flax":
        import jax.numpy as jnp

        return lambda x, size: np.asarray(module.resize_bilinear(jnp.asarray(x), size))

    import keras

    return lambda x, size: keras.ops.convert_to_numpy(module.resize_bilinear(x, size))


@pytest.mark.parametrize("planted", [False, True], ids=["taps", "planted-swapped-weights"])
def test_resize_is_torch_interpolate(port, planted, monkeypatch):
    """Each port's ``resize_bilinear`` (channels-last) against ``F.interpolate(mode=
    "bilinear", align_corners=False)`` (pytorch-fid's resize, antialiasing off) on random
    [0, 1] images, batch 2, 3 channels, odd and even sizes up and down: max abs <= 1e-6. The
    planted bug (each tap's two weights swapped) fails."""
    import torch
    import torch.nn.functional as F

    if planted:
        keras_on_tensorflow_only(port.NAME)
        module = importlib.import_module(f"ports.{port.NAME.split('-')[0]}.models.inception_v3")
        taps = module.linear_taps
        monkeypatch.setattr(module, "linear_taps", lambda *a: (*taps(*a)[:2], *taps(*a)[:1:-1]))
    resize = _resize_port(port.NAME)
    rng = np.random.default_rng(0)
    worst = 0.0
    for h, w, size in RESIZES:
        x = rng.random((2, 3, h, w), dtype=np.float32)
        want = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear")
        got = resize(np.ascontiguousarray(np.moveaxis(x, 1, -1)), size)
        assert got.shape == (2, size, size, 3)
        worst = max(worst, float(np.max(np.abs(np.moveaxis(got, -1, 1) - want.numpy()))))
    assert (worst > RESIZE_ATOL) is planted, worst


# --------------------------------------------------------------------------- peers


def _randomized(model, seed: int = 0):
    from weight_convert.frameworks.reference import randomize_

    return randomize_(model, seed).eval()


def pytorch_fid_peer(monkeypatch, seed: int = 0, full_model: bool = False, resize: bool = True):
    """pytorch-fid's own ``InceptionV3`` (its ``fid_inception_v3``: torchvision's Inception3
    with the FIDInception blocks swapped in), and with ``full_model`` that model itself (the
    logits), on random weights: its download (``load_state_dict_from_url``) returns every
    tensor of a torchvision ``inception_v3(num_classes=1008, aux_logits=False)`` randomized,
    BatchNorm statistics included (the FID blocks add no tensor: the same keys).
    ``resize``: the wrapper's resize to 299 (else it takes the image at its size).
    (wrapper, model or None, state dict)."""
    import torchvision
    from pytorch_fid import inception

    tv = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=False
    )
    sd = _randomized(tv, seed).state_dict()
    monkeypatch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: sd)
    block = inception.InceptionV3.DEFAULT_BLOCK_INDEX
    wrapper = inception.InceptionV3([block], resize_input=resize).eval()
    model = inception.fid_inception_v3().eval() if full_model else None
    return wrapper, model, sd


def reference_from(sd, **overrides):
    """The reference read from ``sd`` (a peer's state dict) through detection, strictly (built
    on the meta device: no initialization to overwrite, CI time)."""
    import torch

    import zoo.models
    from weight_convert import layouts
    from zoo.configs import resolve

    arrays = {k: v.detach().numpy() for k, v in sd.items()}
    detected = layouts.detect(arrays)
    with torch.device("meta"):
        ours = zoo.models.build_model(resolve(detected.config, **overrides))
    reference = layouts.to_reference(arrays, detected)
    state = {k: torch.from_numpy(np.array(v)) for k, v in reference.items()}
    ours.load_state_dict(state, strict=True, assign=True)
    return ours.eval(), detected


def _assert_close(got, want) -> None:
    """max abs <= 1e-4 x the peer's std (the whole-model bound), shapes equal."""
    assert tuple(got.shape) == tuple(want.shape)
    assert float((got - want).abs().max()) <= 1e-4 * float(want.std())


def test_pytorch_fid_peer(monkeypatch):
    """pytorch-fid's own ``InceptionV3`` (full width, random weights): its state dict is
    detected as the FID Inception (``inception_v3_fid``: FID blocks, resize to 299, 2x - 1;
    identical under ``pytorch_fid``) and read strictly into the reference, whose ``pool3``
    equals pytorch-fid's features on two [0, 1] images of 83 x 101 and whose ``logits`` equal
    its fc on them: max abs <= 1e-4 x std (here exact: the same ops). Both without the resize
    to 299 (CI time: the network at 83 x 101 costs 1/13 of it; the resize is
    ``test_resize_is_torch_interpolate``'s, and the slow ``test_pytorch_fid_file`` runs
    everything at 299)."""
    import torch
    import torch.nn.functional as F

    wrapper, _, sd = pytorch_fid_peer(monkeypatch, resize=False)
    ours, detected = reference_from(sd, features=("pool3", "logits"), resize_input=0)
    assert detected.variant == "inception_v3_fid"
    assert "identical under pytorch_fid too" in detected.notes
    x = torch.from_numpy(np.random.default_rng(1).random((2, 3, 83, 101), dtype=np.float32))
    with torch.no_grad():
        features = wrapper(x)[0][:, :, 0, 0]
        out = ours(x)
    _assert_close(out["pool3"], features)
    _assert_close(out["logits"], F.linear(features, sd["fc.weight"], sd["fc.bias"]))


@pytest.mark.slow
def test_pytorch_fid_file(monkeypatch, tmp_path):
    """pytorch-fid's model's weights saved as a file and read by ``create_model(checkpoint=
    ...)`` in every framework: pool3 and logits equal pytorch-fid's ``InceptionV3`` features
    and its ``fid_inception_v3()`` logits on two [0, 1] images of 83 x 101 within 1e-4 x std
    (the reference exactly)."""
    import torch

    import ports.flax.models
    import ports.keras.models
    import zoo.models

    wrapper, model, sd = pytorch_fid_peer(monkeypatch, full_model=True)
    path = tmp_path / "pt_inception-random.pth"
    torch.save(sd, path)
    x = np.random.default_rng(1).random((2, 3, 83, 101), dtype=np.float32)
    with torch.no_grad():
        features = wrapper(torch.from_numpy(x))[0][:, :, 0, 0]
        resized = torch.nn.functional.interpolate(torch.from_numpy(x), (299, 299), mode="bilinear")
        logits = model(2 * resized - 1)
    names = ("pool3", "logits")
    ours = zoo.models.create_model(checkpoint=str(path), features=names)
    with torch.no_grad():
        out = ours(torch.from_numpy(x))
    assert torch.equal(out["pool3"], features) and torch.equal(out["logits"], logits)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    for models in (ports.keras.models, ports.flax.models):
        out = models.create_model(checkpoint=str(path), features=names)(xl)
        for name, want in zip(names, (features, logits), strict=True):
            _assert_close(torch.from_numpy(np.asarray(out[name])), want)


def test_torchvision_peer():
    """torchvision's own ``inception_v3`` (full width, random weights, ``aux_logits=True`` as
    its release, ``transform_input=True``): its ``AuxLogits`` dropped and said, the rest read
    strictly into the reference (``transform_input`` set from the layout), logits equal at
    75 x 75 in eval mode within 1e-4 x std (here exact)."""
    import torch
    import torchvision

    tv = torchvision.models.inception_v3(
        weights=None, aux_logits=True, init_weights=False, transform_input=True
    )
    tv = _randomized(tv, 2)
    ours, detected = reference_from(tv.state_dict())
    assert detected.variant == "inception_v3" and ours.config.transform_input
    assert any("outside the model dropped: AuxLogits" in n for n in detected.notes)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 3, 75, 75), np.float32))
    with torch.no_grad():
        _assert_close(ours(x), tv(x))


@pytest.mark.slow
def test_ports_on_pytorch_fid_weights(port, monkeypatch):
    """The ports holding pytorch-fid's model's random weights (full width) agree with the
    reference on two [0, 1] images of 83 x 101 resized to 299: every layer and the outputs
    within 1e-4 x std (``MODEL_TOLERANCE``)."""
    from weight_convert.parity import compare
    from zoo.registry import FAMILIES

    keras_on_tensorflow_only(port.NAME)
    _, _, sd = pytorch_fid_peer(monkeypatch)
    ours, _ = reference_from(sd, features=("pool3",))
    config = ours.config
    rng = np.random.default_rng(1)
    inputs = [rng.random((2, 3, 83, 101), dtype=np.float32)]
    formats = [i.format for i in FAMILIES["inception_v3"].inputs(config, (2, 3, 83, 101))]
    model = port.build_model(config, initialize=False)
    report = compare(ours, model, port, inputs, formats, tolerance=MODEL_TOLERANCE)
    assert report.passed and not report.unmatched, report.table()


@pytest.mark.slow
def test_fid_agrees_across_frameworks():
    """Issue 17's check (``scripts/fid_parity.py``): 256 scikit-image photo crops (four sizes,
    up- and down-sized, flips) through pytorch-fid's own model with random weights and through
    the reference, Keras (this process's backend) and Flax reading its file: every framework's
    2048-d features within 1e-4 x std of pytorch-fid's, its FID(A, B) within 1e-3 relative of
    pytorch-fid's (so within 2e-3 of each other), and the reference's features exactly
    pytorch-fid's (the same ops)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "fid_parity.py"
    spec = importlib.util.spec_from_file_location("fid_parity", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    lines = []
    result = script.run(images=256, batch=16, seed=0, out=lines.append)
    table = "\n".join(lines)
    assert result["passed"], table
    rows = {r["framework"]: r for r in result["rows"]}
    assert len(rows) == 4 and rows["reference"]["features_err_over_std"] == 0.0, table
    for row in rows.values():
        assert row["features_err_over_std"] <= script.FEATURE_BOUND, table
        assert row["fid_rel_diff"] <= script.FID_RTOL, table
    assert result["spread"] <= 2 * script.FID_RTOL, table

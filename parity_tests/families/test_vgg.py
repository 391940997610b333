"""VGG in the shared suite, and what is particular to it: the adaptive 7 x 7 pool at any input
(bins that overlap or repeat), torchvision's VGG as the reference's authority, keras.applications'
VGG19 files (Keras 3 ``.weights.h5`` and the legacy ``.h5``) read by the converter and held to
keras.applications' own output through each side's preprocessing, and that preprocessing
travelling with the weights (``zoo.preprocessing``); the ``_bn`` variants' BatchNorms (a parity
case, Keras's eps planted, training mode, torchvision's VGG class with BatchNorm as peer: small
stages in CI, vgg19_bn at full size ``slow``).

Bounds: parity within the harness' 1e-4 x std per layer (the suite); the reference against
torchvision bit-exact (the same modules); keras.applications against our reference and ports
within 1e-4 x the output's std (float32 convolutions summed in another order: measured ~3e-6
relative); the preprocessing functions within 1e-6 of keras / torchvision (float32 rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
from family_suite import FamilySuite, ParityCase, keras_on_tensorflow_only, reference_model

#: keras.applications against the reference / ports: x the std of keras' output
PEER_RTOL = 1e-4


class TestVGG(FamilySuite):
    family = "vgg"
    cases = (
        ParityCase("b2-32x32", (2, 3, 32, 32)),  # pool5 1 x 1: every avgpool bin repeats it
        ParityCase("odd-225x191", (1, 3, 225, 191)),  # pools floor odd sides; pool5 7 x 5
        ParityCase("overlap-300x250", (1, 3, 300, 250)),  # pool5 9 x 7: overlapping bins
        # vgg16_bn / vgg19_bn's stages: conv, BatchNorm (random running statistics), ReLU
        ParityCase("bn-b2-45x37", (2, 3, 45, 37), overrides={"batch_norm": True}),
    )
    verify_shape = (1, 3, 45, 37)

    def test_batchnorm_eps_1e3_fails_at_the_first_norm(self, port, monkeypatch):
        """The ports' BatchNorm at Keras's default eps 1e-3 instead of PyTorch's 1e-5 (eval
        mode, random running variances in [0.5, 2]): parity fails at the first BatchNorm,
        ``features.1``, the conv before it passing."""
        keras_on_tensorflow_only(port.NAME)
        framework = port.NAME.split("-")[0]
        if framework == "keras":
            from ports.keras.layers.norm import BatchNorm2d
        else:
            from ports.flax.layers.norm import BatchNorm2d
        init = BatchNorm2d.__init__

        def keras_eps(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.eps = 1e-3

        monkeypatch.setattr(BatchNorm2d, "__init__", keras_eps)
        report = self.run_parity(port, self.tiny(batch_norm=True), (1, 3, 32, 32))
        assert not report.passed
        assert report.first_failure.path == "features.1", report.table()
        assert report.layers[0].path == "features.0" and not report.layers[0].exceeded

    def test_batchnorm_training_mode(self, port):
        """The BatchNorm config in training mode (batch statistics; dropout at 0): the
        gradients of every parameter and the image within the whole-model gradient bound (the
        suite's test_gradients runs the first case, which has no BatchNorm; a port whose
        BatchNorms stayed on the running statistics would differ in every gradient). 32 x 32,
        batch 2: stage 5's BatchNorm normalizes 8 values per channel."""
        from stochastic import without_randomness

        from weight_convert.parity import run_config

        keras_on_tensorflow_only(port.NAME)
        config = without_randomness(self.tiny(batch_norm=True))
        report = run_config(config, port, (2, 3, 32, 32), gradients=True, training=True)
        assert report.passed, report.table()
        assert report.settings["mode"] == "training" and report.outputs

    @classmethod
    def layouts(cls) -> list[str]:
        # keras_applications files are Keras HDF5: read by test_keras_applications_* below
        return ["torchvision"]


def test_aliases_name_gatys_layers():
    """vgg19's Gatys names sit where the paper's layers are in torchvision's ``features``."""
    from zoo.configs import VARIANTS
    from zoo.families.vgg import feature_names, feature_paths

    paths = feature_paths(VARIANTS["vgg19"].config)
    assert paths["conv1_1"] == "features.0" and paths["relu1_1"] == "features.1"
    assert paths["pool1"] == "features.4" and paths["conv4_2"] == "features.21"
    assert paths["relu5_4"] == "features.35" and paths["pool5"] == "features.36"
    names = feature_names(VARIANTS["vgg16"].config)
    assert names[-7:] == tuple(f"classifier.{i}" for i in range(7))
    assert names.index("pool5") < names.index("avgpool") < names.index("classifier.0")
    bn = feature_paths(VARIANTS["vgg19_bn"].config)  # torchvision's vgg19_bn.features
    assert (bn["conv1_1"], bn["bn1_1"], bn["relu1_1"]) == ("features.0", "features.1", "features.2")
    assert bn["pool1"] == "features.6" and bn["bn5_4"] == "features.50"
    assert bn["pool5"] == "features.52" and "bn1_1" not in paths


@pytest.mark.parametrize("out", [7, 3])
def test_adaptive_pool_matrices_are_torch(out):
    """``zoo.pooling``'s matrices give ``F.adaptive_avg_pool2d`` at every map size from 1 to
    30 (smaller than the output: bins repeat; not a multiple: bins overlap), within 1e-6."""
    import torch
    import torch.nn.functional as F

    from zoo.pooling import adaptive_avg_matrix

    rng = np.random.default_rng(0)
    for h, w in [(n, 31 - n) for n in range(1, 31)]:
        x = rng.standard_normal((2, 3, h, w), dtype=np.float32)
        want = F.adaptive_avg_pool2d(torch.from_numpy(x), out).numpy()
        rows = adaptive_avg_matrix(h, out).astype(np.float32)
        cols = adaptive_avg_matrix(w, out).astype(np.float32)
        got = np.einsum("hH,bcHW,wW->bchw", rows, x, cols)
        assert np.abs(got - want).max() <= 1e-6, (h, w)


def test_variants_are_detected_from_their_shapes():
    """Zero-strided state dicts of vgg16 / vgg19 and their ``_bn`` variants (torchvision's
    keys) name the variant (vgg19 and vgg19_bn told apart), say "imagenet" preprocessing; a
    conv out of VGG's spacing, or a BatchNorm's statistics left out, is refused, and so is
    writing a BatchNorm VGG to keras.applications' layout (it has none)."""
    from weight_convert import layouts
    from zoo.configs import VARIANTS, reference_shapes

    states = {}
    for name in ("vgg16", "vgg19", "vgg16_bn", "vgg19_bn"):
        shapes = reference_shapes(VARIANTS[name].config)
        states[name] = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
        detected = layouts.detect(states[name])
        assert (detected.layout, detected.variant) == ("torchvision", name)
        assert detected.config.batch_norm == name.endswith("_bn")
        assert detected.config.preprocessing == "imagenet"
    sd = dict(states["vgg19"])
    sd["features.3.weight"] = sd.pop("features.2.weight")
    sd["features.3.bias"] = sd.pop("features.2.bias")
    with pytest.raises(layouts.LayoutError):
        layouts.detect(sd)
    sd = {k: v for k, v in states["vgg19_bn"].items() if k != "features.50.running_var"}
    with pytest.raises(layouts.LayoutError, match="features.50.running_var"):
        layouts.detect(sd)
    config = TestVGG.tiny(batch_norm=True)
    tiny = {k: np.zeros(s, np.float32) for k, s in reference_shapes(config).items()}
    with pytest.raises(layouts.LayoutError, match="no VGG with BatchNorm"):
        layouts.from_reference(tiny, "keras_applications", "vgg", config)


def test_torchvision_features_load_strict():
    """torchvision's own ``make_layers`` of the tiny stages: its state dict loads strict into
    the reference's ``features_only`` model and gives the same map, bit-exact (the full VGG19:
    test_torchvision_vgg19, slow)."""
    import torch
    from torchvision.models.vgg import make_layers

    from weight_convert.frameworks.reference import randomize_

    config = TestVGG.tiny(features_only=True)
    cfg: list = []
    for width, depth in zip(config.widths, config.depths, strict=True):
        cfg += [width] * depth + ["M"]
    theirs = randomize_(make_layers(cfg), 5).eval()
    ours = reference_model(config)
    ours.features.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 45, 37)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


#: torchvision's VGG class on small stages (its classifier is fixed: 512 x 7 x 7 -> 4096 ->
#: 4096, so the last stage is 512 wide): two convs in stages 1 and 3, every conv BatchNorm'd
SMALL_BN_CFG = [8, 8, "M", 16, "M", 16, 16, "M", 32, "M", 512, "M"]


def _torchvision_peer(make):
    """A torchvision VGG from ``make()`` with every tensor random, running statistics included
    (``randomize_``), in eval mode, and the reference built from its state dict: the
    architecture detected from the shapes (torchvision's layout) and the tensors loaded
    strict."""
    import zoo.models
    from weight_convert import layouts
    from weight_convert.frameworks.reference import randomize_

    peer = randomize_(make(), 0).eval()
    sd = {k: v.detach().numpy() for k, v in peer.state_dict().items()}
    detected = layouts.detect(sd)
    assert (detected.layout, detected.family) == ("torchvision", "vgg")
    ours = zoo.models.build_model(detected.config).eval()
    ours.load_state_dict(peer.state_dict(), strict=True)
    return peer, ours, detected


def _reference_is_peer(peer, ours, shape) -> None:
    """The reference's logits equal the peer's bit for bit (the same modules, eval mode)."""
    import torch

    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(ours(x), peer(x)), shape


def _port_agrees(ours, adapter, shape) -> None:
    """The port holding the reference's weights (the peer's) agrees with it on one input in
    eval mode: every layer and the logits within 1e-4 x their std, every layer matched."""
    from weight_convert.parity import MODEL_TOLERANCE, compare

    inputs, formats = TestVGG.spec().make_inputs(ours.config, shape)
    model = adapter.build_model(ours.config, initialize=False)
    report = compare(ours, model, adapter, inputs, formats, tolerance=MODEL_TOLERANCE)
    assert report.passed and not report.unmatched, report.table()


@pytest.fixture
def small_torchvision_bn():
    from torchvision.models.vgg import VGG, make_layers

    # init_weights=False: randomize_ sets every tensor (its init of the 119M-weight classifier
    # is a second spent for nothing)
    return _torchvision_peer(
        lambda: VGG(make_layers(SMALL_BN_CFG, batch_norm=True), 10, init_weights=False)
    )


def test_small_torchvision_vgg_bn(small_torchvision_bn):
    """torchvision's own VGG class and make_layers(batch_norm=True) on small stages, every
    tensor random (running statistics too): detected as a BatchNorm VGG of those stages, loaded
    strict into the reference, which gives torchvision's logits bit-exact in eval mode at
    64 x 48 (batch 2) and 65 x 47. (The ports on a peer's weights: test_torchvision_vgg19,
    slow; in CI the suite's BatchNorm case holds them to the reference on random weights and
    statistics, which is the same check: the peer's tensors are the reference's.)"""
    peer, ours, detected = small_torchvision_bn
    config = detected.config
    assert config.batch_norm and detected.variant is None
    assert (config.widths, config.depths) == ((8, 16, 16, 32, 512), (2, 1, 2, 1, 1))
    for shape in ((2, 3, 64, 48), (1, 3, 65, 47)):
        _reference_is_peer(peer, ours, shape)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg19", "vgg19_bn"])
def test_torchvision_vgg19(name):
    """torchvision's VGG19 and VGG19-BN, every tensor random (running statistics too): the
    variant is detected from the state dict, the reference loads it strict and agrees
    bit-exact at 224 and 225 x 191 (eval mode); both ports holding those weights agree with
    the reference there."""
    import torchvision

    from weight_convert.frameworks import port

    peer, ours, detected = _torchvision_peer(getattr(torchvision.models, name))
    assert detected.variant == name
    for shape in ((1, 3, 224, 224), (1, 3, 225, 191)):
        _reference_is_peer(peer, ours, shape)
        for adapter in ("flax", "keras"):
            _port_agrees(ours, port(adapter), shape)


# --------------------------------------------------------------------------- preprocessing


def test_preprocessing_is_keras_and_torchvision():
    """``zoo.preprocessing.preprocess`` is keras.applications.vgg19.preprocess_input for
    "caffe" and torchvision's ToTensor + Normalize for "imagenet", within 1e-5 / 1e-6; a
    BGR / RGB swap (the planted bug) is off by far more."""
    import keras
    import torch
    from torchvision.transforms import v2

    from zoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, preprocess

    image = np.random.default_rng(0).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    want = np.asarray(keras.applications.vgg19.preprocess_input(image.astype(np.float32)))
    assert np.abs(preprocess(image, "caffe") - want).max() <= 1e-5
    swapped = preprocess(image[..., ::-1], "caffe")  # RGB fed where BGR is expected
    assert np.abs(swapped - want).max() > 10
    norm = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    chw = torch.from_numpy(np.moveaxis(image, -1, 1).copy()).float() / 255
    assert (
        np.abs(preprocess(image, "imagenet", channels_first=True) - norm(chw).numpy()).max() <= 1e-6
    )
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess(image.astype(np.float32), "caffe")


# --------------------------------------------------------------------------- keras.applications


def _random_keras_vgg19(include_top: bool, size: int, seed: int = 0):
    """keras.applications' VGG19 (weights=None) with every kernel and bias random."""
    import keras

    model = keras.applications.VGG19(
        weights=None,
        include_top=include_top,
        input_shape=(size, size, 3),
        classifier_activation=None,  # logits, as the reference gives
    )
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        scale = 1 / np.sqrt(np.prod(shape[:-1])) if len(shape) > 1 else 0.5
        v.assign((rng.standard_normal(shape) * scale).astype(np.float32))
    return model


def write_legacy_h5(model, path) -> None:
    """``model``'s weights as the released ``vgg19_weights_tf_dim_ordering_tf_kernels.h5``
    holds them (Keras 2's HDF5: root ``layer_names`` of every layer, each layer group's
    ``weight_names`` naming its datasets), written with h5py."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{v.name}:0".encode() for v in layer.weights]
            group.attrs["weight_names"] = names
            for name, v in zip(names, layer.weights, strict=True):
                group.create_dataset(name.decode(), data=np.asarray(v.numpy()))


@pytest.fixture(scope="module")
def keras_vgg19_files(tmp_path_factory):
    """A random keras.applications VGG19 without top at 32 x 32, saved by ``save_weights``
    (Keras 3 ``.weights.h5``) and as the legacy ``.h5``, its output on a uint8 image through
    ``keras.applications.vgg19.preprocess_input``."""
    import keras

    folder = tmp_path_factory.mktemp("keras_vgg19")
    model = _random_keras_vgg19(include_top=False, size=32)
    model.save_weights(folder / "vgg19.weights.h5")
    write_legacy_h5(model, folder / "vgg19_legacy.h5")
    image = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    x = keras.applications.vgg19.preprocess_input(image.astype(np.float32))
    return folder, image, np.asarray(model(x)), [np.asarray(v.numpy()) for v in model.weights]


def _ours(framework: str, path, image: np.ndarray) -> np.ndarray:
    """Our model of ``framework`` loaded from ``path`` on ``image`` through the preprocessing
    its config says, channels-last."""
    import torch

    from zoo.preprocessing import preprocess

    if framework == "torch":
        import zoo.models

        model = zoo.models.create_model(checkpoint=path)
        x = torch.from_numpy(preprocess(image, model.config.preprocessing, channels_first=True))
        with torch.no_grad():
            return np.moveaxis(model(x).numpy(), 1, -1)
    if framework == "keras":
        import ports.keras.models

        model = ports.keras.models.create_model(checkpoint=path)
    else:
        import ports.flax.models

        model = ports.flax.models.create_model(checkpoint=path)
    return np.asarray(model(preprocess(image, model.config.preprocessing)))


def test_legacy_h5_is_what_keras_reads(keras_vgg19_files):
    """The h5py-written legacy file is the structure Keras' legacy reader
    (``legacy_h5_format.load_weights_from_hdf5_group``, behind ``load_weights`` of a ``.h5``)
    loads: a fresh VGG19 takes every weight from it, bit-exact."""
    from keras.src.legacy.saving import legacy_h5_format  # noqa: F401 (the reader used)

    folder, _, _, weights = keras_vgg19_files
    fresh = _random_keras_vgg19(include_top=False, size=32, seed=9)
    fresh.load_weights(folder / "vgg19_legacy.h5")
    for v, want in zip(fresh.weights, weights, strict=True):
        assert np.array_equal(np.asarray(v.numpy()), want), v.path


def test_keras_applications_legacy_h5_reads_the_same(keras_vgg19_files):
    """The legacy ``.h5`` and the Keras 3 ``.weights.h5`` of one model read as the same
    reference tensors, bit-exact (the outputs: test_keras_applications_vgg19)."""
    from weight_convert.sources import read_source
    from weight_convert.tensors import load

    folder = keras_vgg19_files[0]
    legacy = read_source(str(folder / "vgg19_legacy.h5"))
    modern = read_source(str(folder / "vgg19.weights.h5"))
    assert legacy.layout == modern.layout == "keras_applications"
    assert legacy.config == modern.config and list(legacy.reference) == list(modern.reference)
    for key, value in modern.reference.items():
        assert np.array_equal(load(legacy.reference[key]), load(value)), key


def test_keras_applications_vgg19(keras_vgg19_files, tmp_path):
    """keras.applications' VGG19 file, read by the converter (layout keras_applications,
    features_only, preprocessing "caffe"): our reference and both ports loaded from it (and
    from the Flax file our CLI converts it to, which still says "caffe") give keras' output on
    the same image through each side's preprocessing, within 1e-4 x its std; through the
    wrong preprocessing (the planted RGB / BGR swap) they do not."""
    from weight_convert import cli, convert
    from weight_convert.sources import read_source

    folder, image, want, _ = keras_vgg19_files
    path = str(folder / "vgg19.weights.h5")
    source = read_source(path)
    assert (source.layout, source.family) == ("keras_applications", "vgg")
    assert source.config.features_only and source.config.preprocessing == "caffe"
    assert cli.main(["convert", path, "--to", "flax", "-o", str(tmp_path / "f")]) == 0
    flax_file = str(tmp_path / "f.safetensors")
    assert read_source(flax_file).config.preprocessing == "caffe"
    bound = PEER_RTOL * want.std()
    for framework, checkpoint in [("torch", path), ("flax", flax_file), ("keras", path)]:
        got = _ours(framework, checkpoint, image)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= bound, framework
    swapped = _ours("torch", path, image[..., ::-1].copy())
    assert np.abs(swapped - want).max() > 100 * bound
    summary, _ = convert.convert(path, "torch", tmp_path / "tv.pth", layout="torchvision")
    assert any("preprocessing='caffe'" in n for n in summary.detected["notes"])


@pytest.mark.slow
def test_keras_applications_vgg19_top(tmp_path):
    """The full keras.applications VGG19 with its classifier at 224 (fc1's rows permuted from
    Keras' (H, W, C) flatten by rule): the reference and both ports give keras' logits."""
    import keras

    model = _random_keras_vgg19(include_top=True, size=224)
    model.save_weights(tmp_path / "vgg19.weights.h5")
    image = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    want = np.asarray(model(keras.applications.vgg19.preprocess_input(image.astype("float32"))))
    for framework in ("torch", "flax", "keras"):
        got = _ours(framework, str(tmp_path / "vgg19.weights.h5"), image)
        assert np.abs(got - want).max() <= PEER_RTOL * want.std(), framework

"""VGG in the shared suite, and what is particular to it: the adaptive 7 x 7 pool at any input
(bins that overlap or repeat), torchvision's VGG as the reference's authority, keras.applications'
VGG19 files (Keras 3 ``.weights.h5`` and the legacy ``.h5``) read by the converter and held to
keras.applications' own output through each side's preprocessing, and that preprocessing
travelling with the weights (``zoo.preprocessing``).

Bounds: parity within the harness' 1e-4 x std per layer (the suite); the reference against
torchvision bit-exact (the same modules); keras.applications against our reference and ports
within 1e-4 x the output's std (float32 convolutions summed in another order: measured ~3e-6
relative); the preprocessing functions within 1e-6 of keras / torchvision (float32 rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
from family_suite import FamilySuite, ParityCase, reference_model

#: keras.applications against the reference / ports: x the std of keras' output
PEER_RTOL = 1e-4


class TestVGG(FamilySuite):
    family = "vgg"
    cases = (
        ParityCase("b2-32x32", (2, 3, 32, 32)),  # pool5 1 x 1: every avgpool bin repeats it
        ParityCase("odd-225x191", (1, 3, 225, 191)),  # pools floor odd sides; pool5 7 x 5
        ParityCase("overlap-300x250", (1, 3, 300, 250)),  # pool5 9 x 7: overlapping bins
    )
    verify_shape = (1, 3, 45, 37)

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
    """Zero-strided state dicts of vgg16 / vgg19 (torchvision's keys) name the variant, say
    "imagenet" preprocessing; a conv out of VGG's spacing is refused."""
    from weight_convert import layouts
    from zoo.configs import VARIANTS, reference_shapes

    for name in ("vgg16", "vgg19"):
        shapes = reference_shapes(VARIANTS[name].config)
        sd = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
        detected = layouts.detect(sd)
        assert (detected.layout, detected.variant) == ("torchvision", name)
        assert detected.config.preprocessing == "imagenet"
    sd["features.3.weight"] = sd.pop("features.2.weight")
    sd["features.3.bias"] = sd.pop("features.2.bias")
    with pytest.raises(layouts.LayoutError):
        layouts.detect(sd)


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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg19"])
def test_torchvision_vgg19(name):
    """torchvision's VGG19, every tensor random: the reference loads its state dict strict and
    agrees bit-exact at 224 and 225 x 191; both ports agree with the reference there."""
    import torch
    import torchvision

    from weight_convert.frameworks import port
    from weight_convert.frameworks.reference import randomize_
    from weight_convert.parity import run_config
    from zoo.configs import VARIANTS

    theirs = randomize_(getattr(torchvision.models, name)(), 0).eval()
    config = VARIANTS[name].config
    ours = reference_model(config)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for shape in ((1, 3, 224, 224), (1, 3, 225, 191)):
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.equal(ours(x), theirs(x)), shape
        for adapter in ("flax", "keras"):
            report = run_config(config, port(adapter), shape)
            assert report.passed, report.table()


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

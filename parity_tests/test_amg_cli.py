"""``sam-generate`` (``zoo.amg_cli``): run in-process on a tiny official SAM checkpoint (written by
segment-anything's own model, random weights) and a small non-square PNG. The JSON's COCO RLE
decodes (pycocotools) to the masks the reference generator returns when called directly; the
Flax (and, under ``slow``, Keras on TensorFlow) runs equal the reference up to counted
near-ties, as the generator's parity tests hold them; the overlay PNG has the photo's size, the
photo's pixels outside every mask and the blend inside; bad inputs exit with their code in one
line."""

from __future__ import annotations

import json
import os

import checkpoint_factory as factory
import numpy as np
import pytest
from family_suite import keras_on_tensorflow_only
from test_mask_generator import PHOTOS, TINY
from test_mask_generator import SETTINGS as GENERATOR_SETTINGS

from zoo.amg_agreement import agreement
from zoo.amg_cli import main, overlay
from zoo.mask_generator import RecordLogits, SamAutomaticMaskGenerator

#: the generator tests' one-crop case (64 points x 3 masks, nothing filtered, random weights) on
#: the photo their ports run on: the frameworks' compiled functions are those tests' too
SETTINGS = GENERATOR_SETTINGS["grid"]
ARGS = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
N_MASKS = 192


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(checkpoint, image path, image array): segment-anything's tiny SAM and a 300 x 451 PNG."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("amg_cli")
    checkpoint, _ = factory.official_sam(folder / "sam_tiny.pth", TINY, seed=3)
    photo = PHOTOS["chelsea"]
    Image.fromarray(photo).save(folder / "cat.png")
    return checkpoint, str(folder / "cat.png"), photo


@pytest.fixture(scope="module")
def reference(files):
    """The reference generator on the photo, called directly: (generator, binary-mask
    records)."""
    from zoo.models import create_model

    generator = SamAutomaticMaskGenerator(create_model(checkpoint=files[0]), **SETTINGS)
    return generator, generator.generate(files[2])


def _run(files, tmp_path, *extra: str) -> dict:
    out = tmp_path / "out"
    assert main([files[1], "-c", files[0], "-o", str(out), *ARGS, *extra]) == 0
    document = json.loads((tmp_path / "out.json").read_text())
    from PIL import Image

    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (files[2].shape[1], files[2].shape[0]) and im.mode == "RGB"
        document["overlay"] = np.asarray(im)
    return document


def test_torch_json_decodes_to_the_reference_masks(files, reference, tmp_path):
    """The torch run's records are the reference's, field for field and in order; each COCO
    RLE decodes to the reference's binary mask; settings and image size are recorded; the
    overlay keeps the photo outside every mask and blends the masks' colours inside."""
    from pycocotools import mask as mask_utils

    document = _run(files, tmp_path, "--framework", "torch")
    _, expected = reference
    got = document["annotations"]
    assert document["framework"] == "torch"
    image = document["image"]
    assert (image["file"], image["height"], image["width"]) == (files[1], *files[2].shape[:2])
    assert document["settings"] == {
        **dict(
            points_per_batch=64,
            stability_score_offset=1.0,
            crop_n_layers=0,
            crop_nms_thresh=0.7,
            crop_overlap_ratio=512 / 1500,
            crop_n_points_downscale_factor=1,
            min_mask_region_area=0,
            point_grids=None,
            output_mode="coco_rle",
        ),
        **SETTINGS,
    }
    assert len(got) == len(expected) == N_MASKS
    masks = []
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        rle = dict(g["segmentation"], counts=g["segmentation"]["counts"].encode())
        mask = mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(mask, e["segmentation"], err_msg=f"mask {k}")
        for key in ("area", "bbox", "predicted_iou", "point_coords", "stability_score"):
            assert g[key] == e[key], (k, key)
        assert g["crop_box"] == e["crop_box"], k
        masks.append(mask)
    covered = np.any(masks, axis=0)
    assert 0 < covered.sum() < covered.size
    np.testing.assert_array_equal(document["overlay"][~covered], files[2][~covered])
    np.testing.assert_array_equal(document["overlay"], overlay(files[2], masks, seed=0))


def _port_run(files, reference, tmp_path, *extra):
    """A port's JSON against the reference's records: the reference orders tied scores as
    torchvision's NMS, the ports as a stable sort; an exact tie would show as a near-tie
    (order) and fail here, and there is none on this case."""
    generator, expected = reference
    got = _run(files, tmp_path, *extra)["annotations"]
    report = agreement(expected, got, generator, RecordLogits(generator, files[2]))
    print(f"{extra[1]} CLI vs reference: {report.row()}")
    assert report.ok, report.failures[:5]
    assert not report.near_ties, report.near_ties
    assert report.matched == len(expected) == len(got) == N_MASKS


def test_flax_json_equals_the_reference(files, reference, tmp_path):
    _port_run(files, reference, tmp_path, "--framework", "flax")


@pytest.mark.keras
@pytest.mark.slow  # ~5 s in the TensorFlow pass; each backend's generator is in CI's tests
def test_keras_json_equals_the_reference(files, reference, tmp_path):
    """Keras on TensorFlow (each backend's generator is held by test_mask_generator.py)."""
    backend = os.environ["KERAS_BACKEND"]
    keras_on_tensorflow_only(f"keras-{backend}")
    _port_run(files, reference, tmp_path, "--framework", "keras", "--backend", backend)


def test_overlay_blends_seeded_colors():
    """Mask pixels are the rounded blend of photo and colour; the largest mask goes first (the
    smaller one stays on top); outlines are opaque; the same seed gives the same colours."""
    photo = np.full((6, 7, 3), 100, np.uint8)
    big = np.zeros((6, 7), bool)
    big[1:5, 1:6] = True
    small = np.zeros((6, 7), bool)
    small[2:4, 2:4] = True
    colors = np.random.default_rng(5).integers(0, 256, size=(2, 3))
    out = overlay(photo, [small, big], seed=5, alpha=0.25)
    np.testing.assert_array_equal(out[0, 0], photo[0, 0])
    np.testing.assert_array_equal(out[1, 1], np.rint(0.75 * 100 + 0.25 * colors[1]))
    under = 0.75 * 100 + 0.25 * colors[1]
    np.testing.assert_array_equal(out[2, 2], np.rint(0.75 * under + 0.25 * colors[0]))
    lined = overlay(photo, [small, big], seed=5, alpha=0.25, outlines=True)
    np.testing.assert_array_equal(lined[1, 1], colors[1])  # the big mask's border
    np.testing.assert_array_equal(lined[3, 4], out[3, 4])  # inside the big mask, no border


@pytest.mark.parametrize(
    "case,code",
    [("missing image", 3), ("image not an image", 6), ("bad checkpoint", 6), ("output exists", 15)],
)
def test_errors_exit_with_their_code_in_one_line(files, tmp_path, capsys, case, code):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    image, checkpoint = files[1], files[0]
    if case == "missing image":
        image = str(tmp_path / "missing.png")
    elif case == "image not an image":
        image = str(text.with_suffix(".png"))
        text.rename(image)
    elif case == "bad checkpoint":
        checkpoint = str(text)
    else:
        (tmp_path / "out.png").write_bytes(b"")
    assert main([image, "-c", checkpoint, "-o", str(tmp_path / "out")]) == code
    err = capsys.readouterr().err
    assert err.startswith("sam-generate: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out.json").exists()

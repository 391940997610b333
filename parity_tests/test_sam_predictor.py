"""SamPredictor end to end: our reference predictor equals ``segment-anything``'s ``SamPredictor``
(same random weights) on photos of odd, non-square sizes for point, box, mask and mixed prompts;
the Keras and Flax predictors equal ours. Masks are compared as logits at the photo's size (the
upsampling runs in each framework), with the IoU predictions and the low-res logits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sam_parts import TINY_SAM, official_and_reference

from weight_convert import transfer
from weight_convert.frameworks import reference as ref_fw
from weight_convert.tolerance import BLOCK_TOLERANCE, MODEL_TOLERANCE
from zoo.models import Sam
from zoo.predictor import SamPredictor

TINY = TINY_SAM

#: photo sizes (H, W): odd, non-square; larger than the input (resized down) and smaller (up)
PHOTOS = [(301, 157), (75, 111)]


def _photo(shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def _prompts(shape, low_res: np.ndarray | None) -> dict[str, dict]:
    h, w = shape
    points = np.array([[0.3 * w, 0.4 * h], [0.7 * w, 0.8 * h], [0.5 * w, 0.2 * h]])
    labels = np.array([1, 0, 1])
    box = np.array([0.1 * w, 0.15 * h, 0.8 * w, 0.9 * h])
    cases = {
        "points": dict(point_coords=points, point_labels=labels),
        "single-point-one-mask": dict(
            point_coords=points[:1], point_labels=labels[:1], multimask_output=False
        ),
        "box": dict(box=box, multimask_output=False),
        "points+box": dict(point_coords=points[:2], point_labels=labels[:2], box=box),
    }
    if low_res is not None:
        cases["mask+point"] = dict(
            point_coords=points[:1], point_labels=labels[:1], mask_input=low_res
        )
        cases["mask+box"] = dict(box=box, mask_input=low_res, multimask_output=False)
    return cases


def _check(got, expected, what: str) -> float:
    """Whole-model bound (1e-4 x std); a single number (one IoU) has no spread: 1e-5 absolute."""
    expected = np.asarray(expected, np.float64)
    tolerance = MODEL_TOLERANCE if expected.size > 1 else BLOCK_TOLERANCE
    bound = tolerance.bound(expected)
    err = float(np.max(np.abs(np.asarray(got, np.float64) - expected)))
    assert err <= bound, f"{what}: max abs {err:.3e} > {bound:.3e}"
    return err


@pytest.fixture(scope="module")
def models():
    """(official Sam, our reference Sam) holding the same random weights."""
    return official_and_reference(TINY, seed=3)


def _run(predictor, photo, cases) -> dict[str, tuple]:
    predictor.set_image(photo)
    return {name: predictor.predict(**kw, return_logits=True) for name, kw in cases.items()}


@pytest.mark.parametrize("shape", PHOTOS, ids=[f"{h}x{w}" for h, w in PHOTOS])
def test_reference_predictor_equals_segment_anything(models, shape):
    from segment_anything import SamPredictor as OfficialPredictor

    official, ours = models
    photo = _photo(shape)
    theirs_p, ours_p = OfficialPredictor(official), SamPredictor(ours)
    with torch.inference_mode():
        theirs_p.set_image(photo)
    ours_p.set_image(photo)
    _check(ours_p.get_image_embedding(), theirs_p.get_image_embedding().numpy(), "embedding")
    assert ours_p.input_size == tuple(theirs_p.input_size)
    low_res = theirs_p.predict(**_prompts(shape, None)["box"])[2]
    for name, kw in _prompts(shape, low_res).items():
        with torch.inference_mode():
            expected = theirs_p.predict(**kw, return_logits=True)
        got = ours_p.predict(**kw, return_logits=True)
        assert got[0].shape == expected[0].shape == (len(got[1]), *shape), name
        for g, e, what in zip(got, expected, ("masks", "iou", "low-res"), strict=True):
            _check(g, e, f"{shape} {name} {what}")
        # thresholded masks agree wherever the logit is not within the error of the threshold
        clear = np.abs(expected[0]) > 1e-3
        assert np.array_equal((got[0] > 0)[clear], (expected[0] > 0)[clear]), name


def _port_predictor(port_name: str, reference: Sam):
    if port_name == "keras":
        from ports.keras.models import build_model
        from ports.keras.predictor import SamPredictor as PortPredictor
        from weight_convert.frameworks import keras_port as adapter

        model = build_model(reference.config)
    else:
        from ports.flax.models import abstract_model
        from ports.flax.predictor import SamPredictor as PortPredictor
        from weight_convert.frameworks import flax_port as adapter

        model = abstract_model(reference.config)  # every variable is set below
        model.eval()
    adapter.assign(model, transfer.to_port(ref_fw.state_dict(reference), adapter.shapes(model)))
    return PortPredictor(model)


def test_port_predictors_equal_reference(models, port_name):
    _, ours = models
    shape = PHOTOS[0]
    photo = _photo(shape, seed=1)
    reference = SamPredictor(ours)
    low_res = _run(reference, photo, {"box": _prompts(shape, None)["box"]})["box"][2]
    cases = _prompts(shape, low_res)
    expected = _run(reference, photo, cases)
    predictor = _port_predictor(port_name, ours)
    got = _run(predictor, photo, cases)
    _check(predictor.get_image_embedding(), reference.get_image_embedding(), "embedding")
    for name in cases:
        for g, e, what in zip(got[name], expected[name], ("masks", "iou", "low-res"), strict=True):
            assert g.shape == e.shape, (name, what)
            _check(g, e, f"{port_name} {name} {what}")


def test_predictor_rejects_bad_input(models):
    predictor = SamPredictor(models[1])
    with pytest.raises(RuntimeError, match="set_image first"):
        predictor.predict(box=np.array([0, 0, 5, 5]))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        predictor.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        predictor.set_image(np.zeros((10, 10, 3), np.float32))
    predictor.set_image(_photo((20, 30)))
    with pytest.raises(ValueError, match="point_labels must be given"):
        predictor.predict(point_coords=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"point_coords must be \(N, 2\)"):
        predictor.predict(point_coords=np.zeros((2, 3)), point_labels=np.ones(2))
    with pytest.raises(ValueError, match="mask_input must be"):
        predictor.predict(box=np.array([0, 0, 5, 5]), mask_input=np.zeros((32, 32)))
    with pytest.raises(ValueError, match="image encoder alone"):
        SamPredictor(Sam(dataclasses.replace(TINY, encoder_only=True)))

"""The mask generator's framework-free bookkeeping (``zoo.sam_amg``) against segment-anything's
own functions (``segment_anything.utils.amg``) and torchvision's NMS, and the agreement check
(``zoo.amg_agreement``) shown to fail on planted differences."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from zoo import sam_amg
from zoo.amg_agreement import agreement

amg = pytest.importorskip("segment_anything.utils.amg")


@pytest.mark.parametrize("n,layers,scale", [(32, 0, 1), (7, 2, 2), (10, 1, 3)])
def test_point_grids_equal_official(n, layers, scale):
    ours = sam_amg.build_all_layer_point_grids(n, layers, scale)
    theirs = amg.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs, strict=True):
        assert np.array_equal(o, t)


@pytest.mark.parametrize("size", [(512, 512), (400, 600), (301, 157), (1500, 2250)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_equal_official(size, layers):
    assert sam_amg.generate_crop_boxes(size, layers, 512 / 1500) == amg.generate_crop_boxes(
        size, layers, 512 / 1500
    )


def _random_masks(rng, n, h, w) -> np.ndarray:
    """Blobs with holes, islands and empty masks; the first pixel set in some."""
    masks = np.zeros((n, h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n - 1):  # the last mask stays empty
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, max(h, w) // 3)
            masks[i] ^= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    masks[0, 0, 0] = True
    return masks


def test_rle_and_boxes_equal_official():
    rng = np.random.default_rng(0)
    masks = _random_masks(rng, 12, 37, 53)
    theirs = amg.mask_to_rle_pytorch(torch.from_numpy(masks))
    ours = [sam_amg.mask_to_rle(m) for m in masks]
    assert ours == theirs
    for rle, m in zip(ours, masks, strict=True):
        assert np.array_equal(sam_amg.rle_to_mask(rle), m)
        assert sam_amg.area_from_rle(rle) == amg.area_from_rle(rle) == int(m.sum())
        assert sam_amg.coco_encode_rle(rle) == amg.coco_encode_rle(rle)
    boxes = amg.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    assert np.array_equal(sam_amg.mask_to_box(masks), boxes)


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_small_regions_equal_official(mode):
    rng = np.random.default_rng(1)
    for m in _random_masks(rng, 8, 64, 48):
        for area in (5, 60, 400):
            ours, changed = sam_amg.remove_small_regions(m, area, mode)
            theirs, theirs_changed = amg.remove_small_regions(m, area, mode)
            assert changed == theirs_changed and np.array_equal(ours, theirs)


def test_near_crop_edge_equals_official():
    rng = np.random.default_rng(2)
    boxes = rng.integers(0, 300, (200, 2))
    boxes = np.concatenate([boxes, boxes + rng.integers(0, 200, (200, 2))], axis=1)
    for crop in ([0, 0, 400, 300], [100, 50, 400, 300], [0, 120, 250, 300]):
        theirs = amg.is_box_near_crop_edge(torch.from_numpy(boxes), crop, [0, 0, 400, 300])
        ours = sam_amg.is_box_near_crop_edge(boxes, crop, [0, 0, 400, 300])
        assert np.array_equal(ours, theirs.numpy())


@pytest.mark.parametrize("n", [50, 1200])  # torchvision takes another path above 1000 boxes
def test_nms_equals_torchvision_without_ties(n):
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(n)
    xy = rng.integers(0, 400, (n, 2))
    boxes = np.concatenate([xy, xy + rng.integers(0, 120, (n, 2))], axis=1)  # some empty
    scores = rng.permutation(n).astype(np.float32) / n
    for threshold in (0.3, 0.7, 1.0):
        theirs = batched_nms(
            torch.from_numpy(boxes).float(), torch.from_numpy(scores), torch.zeros(n), threshold
        )
        assert np.array_equal(sam_amg.nms(boxes, scores, threshold), theirs.numpy())


def test_nms_breaks_ties_in_production_order():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]])
    keep = sam_amg.nms(boxes, np.ones(4, np.float32), 0.5)
    assert keep.tolist() == [0, 2]


def test_generator_arguments_checked():
    class Fake(sam_amg.MaskGeneratorBase):
        predictor_class = staticmethod(lambda model: model)

    with pytest.raises(ValueError, match="exactly one of"):
        Fake(None, points_per_side=None)
    with pytest.raises(ValueError, match="exactly one of"):
        Fake(None, point_grids=[np.zeros((4, 2))])
    with pytest.raises(ValueError, match="one grid per crop layer"):
        Fake(None, points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1)
    with pytest.raises(ValueError, match="output_mode"):
        Fake(None, output_mode="png")
    with pytest.raises(ValueError, match="points_per_batch"):
        Fake(None, points_per_batch=0)
    with pytest.raises(ValueError, match="uint8"):
        Fake(None).generate(np.zeros((8, 8, 3), np.float32))


def _records(rng, n=6, h=40, w=50) -> list[dict]:
    masks = _random_masks(rng, n + 1, h, w)[:n]
    out = []
    for i, m in enumerate(masks):
        box = sam_amg.mask_to_box(m[None])[0]
        out.append(
            {
                "segmentation": m,
                "area": int(m.sum()),
                "bbox": [int(box[0]), int(box[1]), int(box[2] - box[0]), int(box[3] - box[1])],
                "predicted_iou": 0.99 - 0.05 * i,
                "point_coords": [[float(i), 2.0 * i]],
                "stability_score": 0.97,
                "crop_box": [0, 0, w, h],
            }
        )
    return out


class _Settings:
    pred_iou_thresh, stability_score_thresh, stability_score_offset = 0.88, 0.95, 1.0
    box_nms_thresh = crop_nms_thresh = 0.7


def test_agreement_fails_on_planted_differences():
    """Every kind of difference the agreement check exists for is caught; near-ties are not
    failures but are named."""
    expected = _records(np.random.default_rng(3))
    assert agreement(expected, copy.deepcopy(expected), _Settings).ok

    def planted(edit):
        got = copy.deepcopy(expected)
        edit(got)
        return agreement(expected, got, _Settings, logits=lambda r: logits)

    logits = np.where(expected[1]["segmentation"], 5.0, -5.0).astype(np.float32)
    logits[0, 0] = 1e-6  # a pixel on the threshold
    far_pixel = tuple(np.argwhere(expected[1]["segmentation"])[3])

    def flip(got, pixel):
        got[1]["segmentation"][pixel] ^= True
        m = got[1]["segmentation"]
        box = sam_amg.mask_to_box(m[None])[0]
        got[1]["area"] = int(m.sum())
        got[1]["bbox"] = [int(box[0]), int(box[1]), int(box[2] - box[0]), int(box[3] - box[1])]

    cases = {
        "far pixel": lambda g: flip(g, far_pixel),
        "dropped mask": lambda g: g.pop(2),
        "swapped order": lambda g: g.insert(0, g.pop(3)),
        "iou off": lambda g: g[0].update(predicted_iou=g[0]["predicted_iou"] + 1e-4),
        "stability off": lambda g: g[0].update(stability_score=0.96),
        "wrong bbox": lambda g: g[0].update(bbox=[0, 0, 1, 1]),
        "wrong area": lambda g: g[0].update(area=g[0]["area"] + 1),
    }
    for name, edit in cases.items():
        assert not planted(edit).ok, name
    near = planted(lambda g: flip(g, (0, 0)))
    assert near.ok and near.pixel_near_ties == 1
    # a pixel at a stability cut (logit 1 = threshold + offset) lets the score move by 1 / union
    logits[0, 0] = 1.0 + 1e-6
    union = int(np.count_nonzero(logits > -1.0))
    near = planted(lambda g: g[1].update(stability_score=g[1]["stability_score"] + 1 / union))
    assert near.ok and "stability cuts" in near.near_ties[0]
    assert not planted(
        lambda g: g[1].update(stability_score=g[1]["stability_score"] + 3 / union)
    ).ok
    at_threshold = copy.deepcopy(expected)
    at_threshold[2]["predicted_iou"] = 0.88 + 5e-5
    report = agreement(at_threshold, at_threshold[:2] + at_threshold[3:], _Settings)
    assert report.ok and len(report.near_ties) == 1 and "predicted_iou" in report.near_ties[0]


@pytest.mark.parametrize("offset", [1.0, 0.25, -0.5])
def test_threshold_flags_give_official_stability(offset):
    rng = np.random.default_rng(4)
    logits = (rng.normal(size=(9, 31, 23)) * 3).astype(np.float32)
    logits[0] = -5.0  # nothing above any cut: 0 / 0
    t = 0.0
    flags = (
        (logits > t - offset).astype(np.uint8)
        + 2 * (logits > t).astype(np.uint8)
        + 4 * (logits > t + offset).astype(np.uint8)
    )
    masks, stability = sam_amg.from_threshold_flags(flags)
    theirs = amg.calculate_stability_score(torch.from_numpy(logits), t, offset).numpy()
    assert np.array_equal(masks, logits > t)
    np.testing.assert_array_equal(stability, theirs)  # NaN where theirs is NaN

"""Segment Anything's automatic mask generator: the bookkeeping every framework shares.

``segment-anything``'s ``SamAutomaticMaskGenerator`` prompts SAM with a grid of points over the
photo (and, with ``crop_n_layers``, over overlapping crops of it), keeps the masks whose
predicted IoU and stability score pass their thresholds, drops masks that touch a crop's edge,
removes duplicates with box NMS inside each crop and across crops, optionally removes small
islands and holes, and returns one record per mask. This module holds everything of that which
is not tensor work, in NumPy, with the official arithmetic (float32 where the official code runs
in float32): point grids, crop boxes, NMS, edge filters, run-length encoding, small-region
removal (OpenCV, as the official post-processing), COCO RLE (pycocotools) and the records.

The tensor work (prompt encoder, mask decoder, upsampling to the photo, stability score,
thresholding, boxes of the binary masks) is one hook, ``_predict_batch``, implemented per
framework: ``zoo.mask_generator`` (reference), ``ports.keras.mask_generator``,
``ports.flax.mask_generator``. The ports run it compiled, on batches padded to
``points_per_batch`` so one batch size compiles once.

Ties. Box NMS visits boxes by descending score; where scores tie exactly (across crops every
mask of one crop has the same score, the small-region pass scores 0 or 1) the order is the
sort's. torchvision sorts with an unstable sort, so the official order among tied scores is
torch's; the reference generator calls torchvision (and so equals the official generator mask
for mask and in order), the ports use this module's ``nms`` (a stable sort: tied boxes in the
order they were produced). Exact ties are decisions on a boundary: the parity tests count them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.interpolate import linear_taps

__all__ = [
    "TAP_NAMES",
    "OUTPUT_MODES",
    "MaskData",
    "MaskGeneratorBase",
    "area_from_rle",
    "batch_iterator",
    "build_all_layer_point_grids",
    "build_point_grid",
    "from_threshold_flags",
    "coco_encode_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_box",
    "mask_to_rle",
    "nms",
    "remove_small_regions",
    "rle_to_mask",
    "upsample_taps",
]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


# ---------------------------------------------------------------- point grids and crops


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n * n, 2) points (x, y) evenly spaced in [0, 1] x [0, 1], cell centres, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """One grid per crop layer: layer i has ``int(n_per_side / scale_per_layer**i)`` a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (x0, y0, x1, y1) and their layer: the whole photo (layer 0), then for layer
    i >= 1 a (2**i) x (2**i) grid of crops overlapping by ``overlap_ratio`` of the short side
    (scaled down per layer), column by column as the official ``itertools.product``."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops))
        crop_w, crop_h = crop_len(im_w, n_crops, overlap), crop_len(im_h, n_crops, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops)]
        for x0 in x0s:
            for y0 in y0s:
                boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
                layers.append(i_layer + 1)
    return boxes, layers


def batch_iterator(batch_size: int, points: np.ndarray) -> Iterator[np.ndarray]:
    """Consecutive slices of ``batch_size`` rows (the last one shorter)."""
    for start in range(0, len(points), batch_size):
        yield points[start : start + batch_size]


# ---------------------------------------------------------------- mask upsampling

#: per axis and step: gather indices (lo, hi) and weights (w_lo, w_hi) of a bilinear resize
TAP_NAMES = ("lo", "hi", "w_lo", "w_hi")


def upsample_taps(predictor: Any) -> dict[str, np.ndarray]:
    """The gathers that take the set image's low-res mask logits (L, L) to the image's size as
    ``Sam.postprocess_masks`` does: bilinear to (img_size, img_size), crop to the resized
    image (only rows / columns inside it are computed), bilinear to the original size. Keys
    ``{h,w}{1,2}_{lo,hi,w_lo,w_hi}``; apply step 1 along the width then the height, then
    step 2 the same way (``zoo.interpolate.linear_taps``)."""
    config = predictor.config
    low_res = 4 * config.image_embedding_size
    taps = {}
    for axis, name in ((0, "h"), (1, "w")):
        first = linear_taps(low_res, config.img_size)
        first = [a[: predictor.input_size[axis]] for a in first]
        second = linear_taps(predictor.input_size[axis], predictor.original_size[axis])
        for n, a, b in zip(TAP_NAMES, first, second, strict=True):
            taps[f"{name}1_{n}"] = a
            taps[f"{name}2_{n}"] = b
    return taps


def from_threshold_flags(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w) uint8 flags of mask logits -> binary masks (N, h, w) and stability scores
    (N,) float32. Bit 0: the logit is above ``mask_threshold - stability_score_offset``, bit 1:
    above ``mask_threshold``, bit 2: above ``mask_threshold + offset``. The stability score is
    the official one: pixels above the high cut over pixels above the low cut, counted as
    integers, divided in float32. (The ports return these flags, one byte a pixel, from their
    compiled step: one output where masks and counts as separate outputs of the same logits
    run ~10x slower under XLA on CPU.)"""
    flags = np.asarray(flags)
    inter = np.count_nonzero(flags & 4, axis=(1, 2)).astype(np.float32)
    union = np.count_nonzero(flags & 1, axis=(1, 2)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # an empty low cut: NaN, as official
        return (flags & 2).astype(bool), inter / union


# ---------------------------------------------------------------- boxes and NMS


def mask_to_box(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) int64 boxes (x0, y0, x1, y1) of the set pixels, inclusive
    (the official ``batched_mask_to_box``); [0, 0, 0, 0] for an empty mask."""
    n, h, w = masks.shape
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    out = np.zeros((n, 4), np.int64)
    full = rows.any(axis=1)
    out[full, 0] = cols[full].argmax(axis=1)
    out[full, 1] = rows[full].argmax(axis=1)
    out[full, 2] = w - 1 - cols[full, ::-1].argmax(axis=1)
    out[full, 3] = h - 1 - rows[full, ::-1].argmax(axis=1)
    return out


def box_iou_row(box: np.ndarray, boxes: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """IoU of one float32 box with many, in float32 as torchvision's CPU NMS computes it."""
    w = np.maximum(np.float32(0), np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))
    h = np.maximum(np.float32(0), np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]))
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    with np.errstate(divide="ignore", invalid="ignore"):  # two empty boxes: NaN, kept
        return inter / (area + areas - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy box NMS as torchvision's ``nms``: visit boxes by descending score (ties in index
    order: a stable sort), drop every later box whose IoU with a kept one is above the
    threshold. Returns the kept indices, highest score first."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        # the float32 IoU against the threshold as a double, as torchvision's C++ compares
        suppressed |= box_iou_row(boxes[i], boxes, areas).astype(np.float64) > iou_threshold
    return np.asarray(keep, np.int64)


def is_box_near_crop_edge(
    boxes: np.ndarray, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> np.ndarray:
    """(N,) bool: a box (crop coordinates) within ``atol`` of an edge of its crop that is not
    an edge of the photo."""
    x0, y0 = crop_box[0], crop_box[1]
    boxes = (boxes + np.array([x0, y0, x0, y0])).astype(np.float32)
    near_crop = np.abs(boxes - np.asarray(crop_box, np.float32)) <= atol
    near_image = np.abs(boxes - np.asarray(orig_box, np.float32)) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def box_xyxy_to_xywh(box: np.ndarray) -> list:
    x0, y0, x1, y1 = box.tolist()
    return [x0, y0, x1 - x0, y1 - y0]


# ---------------------------------------------------------------- run-length encoding


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> uncompressed RLE ``{"size": [H, W], "counts": [...]}`` in column-major
    order starting with a run of zeros (pycocotools' convention)."""
    h, w = mask.shape
    flat = np.asarray(mask, bool).T.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [h * w]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> (H, W) bool."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, not {h} x {w}")
    return flat.reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE (pycocotools), ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    out = mask_utils.frPyObjects(rle, h, w)
    out["counts"] = out["counts"].decode("utf-8")
    return out


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or remove islands (``"islands"``) smaller than
    ``area_thresh`` pixels (8-connectivity, OpenCV). Returns the mask and whether it changed;
    if every island is small, the largest stays."""
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = (holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[:, -1][1:]  # label 0 is the background
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0, *small]
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


# ---------------------------------------------------------------- the generator


class MaskData:
    """Columns of per-mask data (NumPy arrays or lists), filtered and concatenated together."""

    def __init__(self, **columns: Any) -> None:
        self.columns: dict[str, Any] = dict(columns)

    def __getitem__(self, key: str) -> Any:
        return self.columns[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.columns[key] = value

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def filter(self, keep: np.ndarray) -> None:
        """Keep rows by a bool mask or by indices (in the indices' order)."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        for k, v in self.columns.items():
            self.columns[k] = [v[i] for i in keep] if isinstance(v, list) else v[keep]

    def cat(self, other: MaskData) -> None:
        for k, v in other.columns.items():
            if k not in self.columns:
                self.columns[k] = list(v) if isinstance(v, list) else v.copy()
            elif isinstance(v, list):
                self.columns[k] = self.columns[k] + v
            else:
                self.columns[k] = np.concatenate([self.columns[k], v])


@dataclass(frozen=True)
class BatchOutput:
    """What a framework's ``_predict_batch`` returns for B points (3 masks each, point-major):
    ``masks`` (3B, h, w) bool at the crop's size (logits above the model's ``mask_threshold``),
    ``iou_preds`` (3B,) float32, ``stability_score`` (3B,) float32: the IoU of the masks
    thresholded at ``mask_threshold`` +- ``stability_score_offset`` (pixel counts as int32, the
    ratio in float32, as the official ``calculate_stability_score``)."""

    masks: np.ndarray
    iou_preds: np.ndarray
    stability_score: np.ndarray


class MaskGeneratorBase:
    """``segment-anything``'s ``SamAutomaticMaskGenerator`` over any framework's predictor:
    the same constructor arguments and defaults, the same records in the same order.

    Subclasses set ``predictor_class`` (the framework's ``SamPredictor``) and implement
    ``_predict_batch``; the reference also overrides ``_nms`` with torchvision's.
    """

    predictor_class: Any = None

    def __init__(
        self,
        model: Any,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if not isinstance(crop_n_layers, int) or crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be an int >= 0, got {crop_n_layers!r}")
        if points_per_side is not None:
            if not isinstance(points_per_side, int) or points_per_side < 1:
                raise ValueError(f"points_per_side must be an int >= 1, got {points_per_side!r}")
            if crop_n_points_downscale_factor < 1:
                raise ValueError("crop_n_points_downscale_factor must be >= 1")
            grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            grids = [np.asarray(g, np.float64) for g in point_grids]
            if len(grids) != crop_n_layers + 1:
                raise ValueError(
                    f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got "
                    f"{len(grids)}"
                )
        for g in grids:
            if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0:
                raise ValueError(f"a point grid must be (N >= 1, 2) in [0, 1], got {g.shape}")
        if not isinstance(points_per_batch, int) or points_per_batch < 1:
            raise ValueError(f"points_per_batch must be an int >= 1, got {points_per_batch!r}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if output_mode == "coco_rle":
            import pycocotools.mask  # noqa: F401  (fail now, not after the model ran)
        if min_mask_region_area > 0:
            import cv2  # noqa: F401
        self.point_grids = grids
        self.predictor = self.predictor_class(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    @property
    def mask_threshold(self) -> float:
        return self.predictor.config.mask_threshold

    # ------------------------------------------------------------ public API

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks for a (H, W, 3) uint8 RGB photo: one record per mask with ``segmentation``
        (per ``output_mode``), ``area``, ``bbox`` (x, y, w, h), ``predicted_iou``,
        ``point_coords`` ([[x, y]]), ``stability_score``, ``crop_box`` (x, y, w, h)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"generate expects an (H, W, 3) uint8 array, got {image.dtype} {image.shape}"
            )
        data = self._generate_masks(image)
        if self.min_mask_region_area > 0:
            data = self.postprocess_small_regions(
                data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        if self.output_mode == "coco_rle":
            segmentations = [coco_encode_rle(r) for r in data["rles"]]
        elif self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(r) for r in data["rles"]]
        else:
            segmentations = data["rles"]
        return [
            {
                "segmentation": segmentations[i],
                "area": area_from_rle(data["rles"][i]),
                "bbox": box_xyxy_to_xywh(data["boxes"][i]),
                "predicted_iou": data["iou_preds"][i].item(),
                "point_coords": [data["points"][i].tolist()],
                "stability_score": data["stability_score"][i].item(),
                "crop_box": box_xyxy_to_xywh(data["crop_boxes"][i]),
            }
            for i in range(len(segmentations))
        ]

    # ------------------------------------------------------------ the official steps

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        data = MaskData()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs, strict=True):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size))
        if len(crop_boxes) > 1 and len(data):
            # duplicates between crops: prefer masks from smaller crops
            c = data["crop_boxes"]
            areas = ((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])).astype(np.float32)
            data.filter(self._nms(data["boxes"], np.float32(1) / areas, self.crop_nms_thresh))
        return data

    def _process_crop(self, image, crop_box, crop_layer_idx, orig_size) -> MaskData:
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        cropped_size = cropped.shape[:2]
        self.predictor.set_image(cropped)
        points_scale = np.array(cropped_size)[None, ::-1]
        points_for_image = self.point_grids[crop_layer_idx] * points_scale
        data = MaskData()
        for points in batch_iterator(self.points_per_batch, points_for_image):
            data.cat(self._process_batch(points, cropped_size, crop_box, orig_size))
        self.predictor.reset_image()
        if len(data):
            data.filter(self._nms(data["boxes"], data["iou_preds"], self.box_nms_thresh))
        offset = np.array([x0, y0, x0, y0])
        data["boxes"] = data["boxes"] + offset
        data["points"] = data["points"] + np.array([x0, y0])
        data["crop_boxes"] = np.tile(np.asarray(crop_box, np.int64), (len(data), 1))
        return data

    def _process_batch(self, points, im_size, crop_box, orig_size) -> MaskData:
        orig_h, orig_w = orig_size
        coords = self.predictor.transform.apply_coords(points, im_size)
        out = self._predict_batch(coords)
        n = 3 * len(points)
        if not (
            out.masks.shape == (n, *im_size)
            and out.iou_preds.shape == out.stability_score.shape == (n,)
        ):
            raise RuntimeError(f"_predict_batch returned the wrong shapes for {len(points)} points")
        data = MaskData(
            masks=out.masks,
            iou_preds=out.iou_preds,
            points=np.repeat(points, 3, axis=0),
            stability_score=out.stability_score,
        )
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > np.float32(self.pred_iou_thresh))
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= np.float32(self.stability_score_thresh))
        data["boxes"] = mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not keep.all():
            data.filter(keep)
        data["rles"] = [self._uncropped_rle(m, crop_box, orig_h, orig_w) for m in data["masks"]]
        del data.columns["masks"]
        return data

    @staticmethod
    def _uncropped_rle(mask: np.ndarray, crop_box, orig_h: int, orig_w: int) -> dict[str, Any]:
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
            return mask_to_rle(mask)
        full = np.zeros((orig_h, orig_w), bool)
        full[y0:y1, x0:x1] = mask
        return mask_to_rle(full)

    def postprocess_small_regions(self, data: MaskData, min_area: int, nms_thresh: float):
        """Fill holes and remove islands under ``min_area`` pixels in every mask, then NMS
        again preferring the masks that did not change (the official post-processing)."""
        if len(data) == 0:
            return data
        boxes, scores, changed_masks = [], [], {}
        for i, rle in enumerate(data["rles"]):
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            unchanged = not (changed_holes or changed_islands)
            scores.append(float(unchanged))
            boxes.append(mask_to_box(mask[None])[0])
            if not unchanged:
                changed_masks[i] = mask
        boxes = np.stack(boxes)
        keep = self._nms(boxes, np.asarray(scores, np.float32), nms_thresh)
        for i in keep:
            if i in changed_masks:
                data["rles"][i] = mask_to_rle(changed_masks[i])
                data["boxes"][i] = boxes[i]
        data.filter(keep)
        return data

    # ------------------------------------------------------------ hooks

    def _nms(self, boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
        return nms(boxes, scores, iou_threshold)

    def _predict_batch(self, coords: np.ndarray) -> BatchOutput:
        """(B, 2) float64 point prompts (x, y) in the resized crop's pixels (the predictor's
        image is set) -> the 3 masks of each point at the crop's size, with their scores."""
        raise NotImplementedError

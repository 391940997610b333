"""Agreement of two automatic-mask-generator outputs (framework-free, NumPy).

Two frameworks computing the same model in float32 differ by rounding, so a decision whose
score lies within that rounding of its threshold may go either way: a pixel whose logit is
within ``eps`` x (the mask's logit std) of ``mask_threshold`` (or of a stability cut,
``mask_threshold`` +- ``stability_score_offset``: the stability score may then move by what
such pixels can change), a mask whose predicted IoU or stability score is within ``eps`` (plus
that) of its filter threshold, two masks whose scores are within
``eps`` of each other (their order), a box pair whose IoU is within ``eps`` of an NMS threshold.
``agreement`` matches the records of two runs, counts such near-ties and names them, and lists
everything else that differs as a failure. Pixels are judged with the expected side's logits
(``zoo.mask_generator.RecordLogits``); without them any differing pixel is a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.sam_amg import box_iou_row, mask_to_box, rle_to_mask

__all__ = ["Agreement", "agreement", "segmentation_mask"]


def segmentation_mask(segmentation: Any) -> np.ndarray:
    """A record's ``segmentation`` in any output mode -> (H, W) bool."""
    if isinstance(segmentation, np.ndarray):
        return segmentation.astype(bool)
    if isinstance(segmentation["counts"], list):
        return rle_to_mask(segmentation)
    from pycocotools import mask as mask_utils

    rle = dict(segmentation, counts=segmentation["counts"].encode("utf-8"))
    return mask_utils.decode(rle).astype(bool)


def _box_iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one XYWH record box with many, as NMS computed it (``zoo.sam_amg.box_iou_row``
    on the XYXY boxes: x1 = x + w)."""
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    xyxy[:, 2:] += xyxy[:, :2]
    one = np.asarray(box, np.float32).copy()
    one[2:] += one[:2]
    areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    return box_iou_row(one, xyxy, areas)


@dataclass
class Agreement:
    """The comparison of ``got`` with ``expected``: counts, the largest score differences of
    matched masks, near-ties (decisions on a boundary, named) and failures (named)."""

    expected: int
    got: int
    matched: int = 0
    identical_masks: int = 0
    pixel_near_ties: int = 0
    max_iou_diff: float = 0.0
    max_stability_diff: float = 0.0
    near_ties: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def row(self) -> dict[str, Any]:
        return {
            "masks (expected / got)": f"{self.expected} / {self.got}",
            "identical masks": self.identical_masks,
            "near-tie pixels": self.pixel_near_ties,
            "near-tie decisions": len(self.near_ties),
            "max |d iou|": f"{self.max_iou_diff:.1e}",
            "max |d stability|": f"{self.max_stability_diff:.1e}",
            "failures": len(self.failures),
        }


def _key(record: dict) -> tuple:
    return (tuple(record["crop_box"]), tuple(map(tuple, record["point_coords"])))


def agreement(
    expected: list[dict],
    got: list[dict],
    settings: Any,
    logits: Callable[[dict], np.ndarray] | None = None,
    *,
    eps: float = 1e-4,
    score_bound: float = 1e-5,
    mask_threshold: float = 0.0,
) -> Agreement:
    """Compare two generators' records (same photo, same settings; ``settings`` is either
    generator: its thresholds are read). Scores of matched masks must agree to
    ``score_bound``; decisions within ``eps`` of their boundary are near-ties."""
    out = Agreement(len(expected), len(got))
    # match: same crop and point, nearest predicted IoU (each point has three masks)
    pairs, used = [], set()
    for j, g in enumerate(got):
        candidates = [i for i, e in enumerate(expected) if i not in used and _key(e) == _key(g)]
        if candidates:
            i = min(
                candidates, key=lambda i: abs(expected[i]["predicted_iou"] - g["predicted_iou"])
            )
            if abs(expected[i]["predicted_iou"] - g["predicted_iou"]) <= 100 * score_bound:
                pairs.append((i, j))
                used.add(i)
    out.matched = len(pairs)
    matched_got = {j for _, j in pairs}
    for side, records, others, matched in (
        ("expected", expected, got, used),
        ("got", got, expected, matched_got),
    ):
        for k, r in enumerate(records):
            if k not in matched:
                reason = _unmatched_reason(r, others, settings, eps, logits, mask_threshold)
                (out.near_ties if reason.startswith("near") else out.failures).append(
                    f"{side} #{k} ({r['crop_box']}, point {r['point_coords'][0]}): {reason}"
                )
    # order: an inversion is a near-tie when the two masks' scores are within eps
    pairs.sort()
    got_pos = np.array([j for _, j in pairs])
    ious = np.array([expected[i]["predicted_iou"] for i, _ in pairs])
    for a in range(len(pairs)):
        later = np.flatnonzero(got_pos[a + 1 :] < got_pos[a]) + a + 1
        for b in later:
            what = f"order of expected #{pairs[a][0]} and #{pairs[b][0]}"
            if abs(ious[a] - ious[b]) <= eps:
                out.near_ties.append(f"near-tie {what}: scores {ious[a]:.7f} / {ious[b]:.7f}")
            else:
                out.failures.append(f"{what} swapped (scores {ious[a]:.7f} / {ious[b]:.7f})")
    for i, j in pairs:
        e, g = expected[i], got[j]
        d_iou = abs(e["predicted_iou"] - g["predicted_iou"])
        d_stab = abs(e["stability_score"] - g["stability_score"])
        out.max_iou_diff = max(out.max_iou_diff, d_iou)
        out.max_stability_diff = max(out.max_stability_diff, d_stab)
        if d_iou > score_bound:
            out.failures.append(f"expected #{i}: predicted_iou differs by {d_iou:.2e}")
        me, mg = segmentation_mask(e["segmentation"]), segmentation_mask(g["segmentation"])
        diff = me != mg
        n_diff = int(diff.sum())
        lg = logits(e) if logits is not None and (n_diff or d_stab > score_bound) else None
        if d_stab > score_bound:
            slack = None if lg is None else _stability_slack(lg, settings, mask_threshold, eps)
            if slack is not None and d_stab <= slack + score_bound:
                out.near_ties.append(
                    f"near-tie: expected #{i}'s stability_score differs by {d_stab:.2e}, "
                    f"within what its pixels at the stability cuts allow ({slack:.2e})"
                )
            else:
                out.failures.append(f"expected #{i}: stability_score differs by {d_stab:.2e}")
        if n_diff == 0:
            out.identical_masks += 1
        elif lg is None:
            out.failures.append(f"expected #{i}: {n_diff} pixels differ (no logits to judge)")
        else:
            tol = _pixel_tolerance(lg, eps)
            far = diff & (np.abs(lg - mask_threshold) > tol)
            if far.any():
                out.failures.append(
                    f"expected #{i}: {int(far.sum())} of {n_diff} differing pixels have logits "
                    f"farther than {tol:.1e} from the threshold"
                )
            out.pixel_near_ties += n_diff - int(far.sum())
        box = mask_to_box(mg[None])[0]
        if g["bbox"] != [int(box[0]), int(box[1]), int(box[2] - box[0]), int(box[3] - box[1])]:
            out.failures.append(f"got #{j}: bbox {g['bbox']} is not its mask's box")
        if g["area"] != int(mg.sum()):
            out.failures.append(f"got #{j}: area {g['area']} is not its mask's")
    return out


def _pixel_tolerance(logits: np.ndarray, eps: float) -> float:
    """How near its threshold a pixel's logit must lie to be a near-tie: eps x the mask's
    logit std (at least eps)."""
    return eps * max(float(logits[np.isfinite(logits)].std()), 1.0)


def _stability_slack(logits: np.ndarray, settings: Any, mask_threshold: float, eps: float):
    """The largest change of a stability score (pixels above the high cut / above the low cut)
    that the pixels lying within the pixel tolerance of either cut can make."""
    tol = _pixel_tolerance(logits, eps)
    off = settings.stability_score_offset
    hi, lo = mask_threshold + off, mask_threshold - off
    n_hi = int(np.count_nonzero(np.abs(logits - hi) <= tol))
    n_lo = int(np.count_nonzero(np.abs(logits - lo) <= tol))
    union = int(np.count_nonzero(logits > lo)) - n_lo
    if union <= 0:
        return None
    return (n_hi + n_lo) / union


def _unmatched_reason(
    record: dict,
    others: list[dict],
    settings: Any,
    eps: float,
    logits: Callable[[dict], np.ndarray] | None,
    mask_threshold: float,
) -> str:
    """Why a mask present in one output only may be a near-tie, else why not."""
    if settings.pred_iou_thresh > 0:
        value, threshold = record["predicted_iou"], settings.pred_iou_thresh
        if abs(value - threshold) <= eps:
            return f"near-tie: predicted_iou {value:.7f} at threshold {threshold}"
    if settings.stability_score_thresh > 0:
        value, threshold = record["stability_score"], settings.stability_score_thresh
        slack = 0.0
        if logits is not None:
            slack = _stability_slack(logits(record), settings, mask_threshold, eps) or 0.0
        if abs(value - threshold) <= eps + slack:
            return f"near-tie: stability_score {value:.7f} at threshold {threshold} (+-{slack:.1e})"
    if others:
        iou = _box_iou(record["bbox"], np.array([o["bbox"] for o in others]))
        for threshold in (settings.box_nms_thresh, settings.crop_nms_thresh):
            close = np.abs(np.nan_to_num(iou, nan=-1.0) - threshold) <= eps
            if close.any():
                return f"near-tie: box IoU {iou[close][0]:.7f} at NMS threshold {threshold}"
    return "missing from the other output, no score near a boundary"

"""Synthetic scenes for segmentation: textured backgrounds with ellipses, polygons and bands on
them, and the prompts SAM trains on (a point inside a mask, a jittered box around it).
Framework-free (NumPy only), vectorised over pixels, and deterministic from the
``np.random.Generator`` passed in.

``scene(rng, height, width)`` -> (image (H, W, 3) uint8, masks (K, H, W) bool): objects are
painted in order, each over the ones before, so a mask is the visible part of its object;
objects left smaller than ``min_area`` pixels are dropped. Backgrounds are smooth noise, linear
gradients or stripes; objects are flat, noisy, graded or striped in their own colours, which
keep a distance from the background's and each other's (an object of the background's colour
would be invisible, not a segmentation problem).

``sample_points(rng, masks)``, ``sample_boxes(rng, masks)``: one prompt per mask, in pixel
coordinates (x, y) of the image, as ``SamPredictor`` takes them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_boxes", "sample_boxes", "sample_points", "scene", "SHAPES"]

#: the object kinds, drawn uniformly
SHAPES = ("ellipse", "polygon", "band")
#: the least distance (RGB, 0..255) between an object's colour and those under it / before it
MIN_COLOR_DISTANCE = 60.0


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres: x (1, W) and y (H, 1), float32."""
    x = np.arange(width, dtype=np.float32)[None, :] + 0.5
    y = np.arange(height, dtype=np.float32)[:, None] + 0.5
    return x, y


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """(H, W) float32 in about [-1, 1]: a (cells x cells) random grid, bilinearly upsampled."""
    coarse = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    gy = np.linspace(0.0, cells, height, dtype=np.float32)
    gx = np.linspace(0.0, cells, width, dtype=np.float32)
    y0 = np.minimum(gy.astype(np.int64), cells - 1)
    x0 = np.minimum(gx.astype(np.int64), cells - 1)
    fy, fx = (gy - y0)[:, None], (gx - x0)[None, :]
    a, b = coarse[y0][:, x0], coarse[y0][:, x0 + 1]
    c, d = coarse[y0 + 1][:, x0], coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _texture(
    rng: np.random.Generator, height: int, width: int, colors: np.ndarray, contrast: float
) -> np.ndarray:
    """(H, W, 3) float32: ``colors[0]`` textured by one of flat / noise / gradient / stripes,
    mixing in ``colors[1]`` by up to ``contrast`` (0..1), plus fine pixel noise."""
    x, y = _grid(height, width)
    kind = rng.integers(4)
    if kind == 0:  # flat
        t = np.zeros((height, width), np.float32)
    elif kind == 1:  # smooth noise
        t = 0.5 + 0.5 * _smooth_noise(rng, height, width, int(rng.integers(2, 12)))
    elif kind == 2:  # linear gradient along a random direction
        theta = rng.uniform(0, 2 * np.pi)
        s = np.cos(theta) * x / width + np.sin(theta) * y / height
        t = (s - s.min()) / max(float(s.max() - s.min()), 1e-6)
    else:  # stripes: a square or sine wave along a random direction
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6.0, 32.0)
        phase = 2 * np.pi * (np.cos(theta) * x + np.sin(theta) * y) / period
        t = np.sin(phase + rng.uniform(0, 2 * np.pi))
        t = (t > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * t
    t = contrast * t.astype(np.float32)[..., None]
    out = colors[0] * (1 - t) + colors[1] * t
    sigma = rng.uniform(0.0, 10.0)
    return out + sigma * rng.standard_normal((height, width, 3), dtype=np.float32)


def _color(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """An RGB colour (3,) float32 at least ``MIN_COLOR_DISTANCE`` from every colour in
    ``avoid`` (the farthest of 16 draws when none is)."""
    best, best_d = None, -1.0
    for _ in range(16):
        c = rng.uniform(0, 255, 3).astype(np.float32)
        d = min((float(np.linalg.norm(c - a)) for a in avoid), default=np.inf)
        if d >= MIN_COLOR_DISTANCE:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _shape(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    """(H, W) bool: one ellipse, star-shaped polygon or band placed at random."""
    x, y = _grid(height, width)
    side = min(height, width)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    theta = rng.uniform(0, np.pi)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = (x - cx) * cos + (y - cy) * sin  # coordinates along / across the shape's axis
    v = -(x - cx) * sin + (y - cy) * cos
    if kind == "ellipse":
        a, b = rng.uniform(0.05, 0.3, 2) * side
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == "band":  # a rotated rectangle, long and thin, often crossing the image
        length = rng.uniform(0.3, 1.5) * max(height, width)
        thickness = rng.uniform(0.03, 0.12) * side
        return (np.abs(u) <= length / 2) & (np.abs(v) <= thickness / 2)
    # a polygon of 3..8 vertices, star-shaped around its centre (hence simple), even-odd rule
    n = int(rng.integers(3, 9))
    radius = rng.uniform(0.08, 0.3) * side
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.5, 1.0, n)
    px, py = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    inside = np.zeros((height, width), bool)
    for i in range(n):
        x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = (y > min(y0, y1)) & (y <= max(y0, y1))  # (H, 1)
        at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)  # the edge's x at each row
        inside ^= crosses & (x < at)
    return inside


def scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    n_objects: int | tuple[int, int] = (3, 8),
    min_area: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A textured background with ``n_objects`` objects (an int, or an inclusive (low, high)
    range drawn from) painted over it and over each other.

    Returns the image (H, W, 3) uint8 and the visible part of each object that kept at least
    ``min_area`` pixels (default: 0.2% of the image, at least 16) as masks (K, H, W) bool, in
    painting order (bottom first); K may be smaller than the number drawn, even 0.
    """
    if isinstance(n_objects, int):
        count = n_objects
    else:
        count = int(rng.integers(n_objects[0], n_objects[1] + 1))
    if min_area is None:
        min_area = max(16, int(0.002 * height * width))
    bg_colors = [_color(rng, []) for _ in range(2)]
    bg_colors[1] = _color(rng, [bg_colors[0]])
    image = _texture(rng, height, width, np.stack(bg_colors), rng.uniform(0.3, 1.0))
    shapes, used = [], list(bg_colors)
    for _ in range(count):
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        shape = _shape(rng, kind, height, width)
        base = _color(rng, used)
        used.append(base)
        second = np.clip(base + rng.uniform(-60, 60, 3).astype(np.float32), 0, 255)
        rows, cols = np.flatnonzero(shape.any(axis=1)), np.flatnonzero(shape.any(axis=0))
        if len(rows):  # textured over the shape's box only
            box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            th, tw = rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]
            texture = _texture(rng, th, tw, np.stack([base, second]), rng.uniform(0.0, 0.6))
            image[box] = np.where(shape[box][..., None], texture, image[box])
        shapes.append(shape)
    if not shapes:
        return np.clip(image, 0, 255).astype(np.uint8), np.zeros((0, height, width), bool)
    stack = np.stack(shapes)
    # what later objects cover: the union of every shape above, reversed cumulative OR
    above = np.logical_or.accumulate(stack[::-1], axis=0)[::-1]
    covered = np.concatenate([above[1:], np.zeros((1, height, width), bool)])
    visible = stack & ~covered
    keep = visible.sum(axis=(1, 2)) >= min_area
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), visible[keep]


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool, none empty -> (K, 4) float32 tight boxes (x0, y0, x1, y1), x1 / y1 the last
    column / row inside (``segment-anything``'s ``batched_mask_to_box``)."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    if not (rows.any(axis=1).all()):
        raise ValueError("mask_boxes: an empty mask has no box")
    h, w = masks.shape[1:]
    y0, x0 = rows.argmax(axis=1), cols.argmax(axis=1)
    y1 = h - 1 - rows[:, ::-1].argmax(axis=1)
    x1 = w - 1 - cols[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)


def sample_points(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """One point per mask, uniform over its pixels: (K, 2) float32 pixel (x, y) (integers: the
    prompt encoder adds the half pixel)."""
    flat = masks.reshape(len(masks), -1)
    counts = flat.sum(axis=1)
    if not counts.all():
        raise ValueError("sample_points: an empty mask has no point")
    # the k-th pixel of each mask, k uniform in [0, count): found through the cumulative sum
    k = (rng.random(len(masks)) * counts).astype(np.int64)
    index = (np.cumsum(flat, axis=1) > k[:, None]).argmax(axis=1)
    w = masks.shape[2]
    return np.stack([index % w, index // w], axis=1).astype(np.float32)


def sample_boxes(
    rng: np.random.Generator, masks: np.ndarray, jitter: float = 0.1, max_jitter: float = 8.0
) -> np.ndarray:
    """One box per mask: its tight box with each coordinate moved by Gaussian noise of standard
    deviation ``jitter`` x the box's side, at most ``max_jitter`` pixels (SAM's training noise,
    scaled to small images), clipped to the image and kept ordered: (K, 4) float32."""
    boxes = mask_boxes(masks)
    h, w = masks.shape[1:]
    sides = np.concatenate([boxes[:, 2:] - boxes[:, :2] + 1] * 2, axis=1)
    noise = rng.standard_normal(boxes.shape).astype(np.float32) * jitter * sides
    boxes = boxes + np.clip(noise, -max_jitter, max_jitter)
    boxes = np.clip(boxes, 0, np.array([w - 1, h - 1, w - 1, h - 1], np.float32))
    x0, x1 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    y0, y1 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    return np.stack([x0, y0, x1, y1], axis=1)

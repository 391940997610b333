"""Training SAM on synthetic scenes (``zoo.synthetic_scenes``): the recipe, the batches and the
evaluation, framework-free, and the PyTorch reference loop (torch imported on call).
``ports.keras.sam_training`` (``model.fit``) and ``ports.flax.sam_training`` (``nnx.Optimizer``
+ ``nnx.jit``) run the same steps on the same batches; ``scripts/train_sam_shapes.py`` drives
them and wrote ``zoo/weights/sam_shapes.pth``.

The recipe, SAM's in small (``ShapesRecipe``):

- a batch is ``images`` scenes (sides drawn between ``min_side`` and 1 of ``img_size``, padded
  at the bottom and right as the predictor pads photos), each with ``points`` point prompts (one
  positive point uniform inside a mask) and ``boxes`` box prompts (a mask's box, jittered), the
  masks drawn with replacement. Batch ``k`` of a run comes from ``np.random.default_rng((seed,
  k))``: any framework can make any batch, in any order.
- the image encoder embeds the scenes; per scene, the prompt encoder embeds the points (with
  the padding point, so two tokens) and the boxes (two corner tokens), and the decoder predicts
  all four masks and IoU scores of every prompt (``predict_masks``: points then boxes).
- per prompt and mask: the mask loss is the binary cross-entropy of the low-res logits against
  the target (the mask downsampled to the logits' grid: the mean of each cell, >= 0.5), averaged
  over pixels, plus ``dice_weight`` x the soft Dice loss ``1 - (2 sum(p t) + 1) / (sum(p) +
  sum(t) + 1)``, p = sigmoid(logits); the IoU loss is the squared error of the predicted IoU
  against the IoU of the mask thresholded at 0 with the target (no gradient through it;
  intersection / max(union, 1)).
- a point is ambiguous: its loss is the mask loss of the best of the three multimask outputs
  (the least mask loss; chosen without gradient, the first of equals) plus ``iou_weight`` x the
  mean IoU loss of the three. A box takes the single-mask output: its mask loss plus
  ``iou_weight`` x its IoU loss. The step's loss is the mean over every prompt of the batch.
- Adam (``zoo.training.AdamW``, weight decay 0: a parameter no prompt reaches, e.g. the mask
  prompt's, has no gradient in PyTorch and would not decay there, but would in optax), the
  learning rate warmed up linearly over ``warmup`` steps, then cosine to 0
  (``learning_rates()``, one value per step, set before each step in every framework).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.families.sam import SamConfig
from zoo.sam_transforms import preprocess
from zoo.synthetic_scenes import sample_boxes, sample_points, scene
from zoo.training import AdamW

__all__ = [
    "SAM_SHAPES_WEIGHTS",
    "ShapesRecipe",
    "evaluate",
    "make_batch",
    "mask_iou",
    "reference_train",
]

#: the shipped ``sam_shapes`` weights (official layout): ``create_model(checkpoint=...)``
SAM_SHAPES_WEIGHTS = Path(__file__).resolve().parent / "weights" / "sam_shapes.pth"


@dataclass(frozen=True)
class ShapesRecipe:
    """How ``sam_shapes`` is trained (module docstring); every framework reads the same one."""

    steps: int = 2000
    images: int = 4
    points: int = 4
    boxes: int = 4
    optimizer: AdamW = AdamW(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    warmup: int = 100
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    min_side: float = 0.625
    n_objects: tuple[int, int] = (2, 8)

    @property
    def prompts(self) -> int:
        return self.points + self.boxes

    def learning_rates(self) -> np.ndarray:
        """(steps,) float64: the learning rate of each step."""
        step = np.arange(self.steps, dtype=np.float64)
        warm = (step + 1) / max(self.warmup, 1)
        progress = (step - self.warmup) / max(self.steps - self.warmup, 1)
        cosine = 0.5 * (1 + np.cos(np.pi * np.clip(progress, 0.0, 1.0)))
        return self.optimizer.lr * np.where(step < self.warmup, warm, cosine)


def make_batch(config: SamConfig, recipe: ShapesRecipe, seed: int, step: int) -> dict:
    """Batch ``step`` of the run seeded ``seed``, reference layout:

    - ``images`` (N, 3, S, S) float32, normalized and padded as the predictor does;
    - ``point_coords`` (N, P, 1, 2) float32 pixel (x, y), ``point_labels`` (N, P, 1) int32 (1);
    - ``boxes`` (N, B, 4) float32 (x0, y0, x1, y1);
    - ``targets`` (N, P + B, 4g, 4g) float32 in {0, 1}: each prompt's mask on the logits' grid
      (points first, then boxes).
    """
    rng = np.random.default_rng((seed, step))
    size, low = config.img_size, 4 * config.image_embedding_size
    factor = size // low
    images, coords, boxes, targets = [], [], [], []
    while len(images) < recipe.images:
        h, w = np.rint(rng.uniform(recipe.min_side, 1.0, 2) * size).astype(int)
        if rng.random() < 0.5:  # square half of the time: the predictor's usual case
            h = w = size
        image, masks = scene(rng, h, w, recipe.n_objects)
        padded = np.zeros((len(masks), size, size), bool)
        padded[:, :h, :w] = masks
        low_res = padded.reshape(len(masks), low, factor, low, factor).mean(axis=(2, 4)) >= 0.5
        usable = np.flatnonzero(low_res.any(axis=(1, 2)))
        if len(usable) == 0:
            continue
        pick = rng.choice(usable, recipe.points + recipe.boxes)
        images.append(preprocess(image, config)[0].transpose(2, 0, 1))
        coords.append(sample_points(rng, masks[pick[: recipe.points]])[:, None])
        boxes.append(sample_boxes(rng, masks[pick[recipe.points :]]))
        targets.append(low_res[pick].astype(np.float32))
    return {
        "images": np.stack(images),
        "point_coords": np.stack(coords),
        "point_labels": np.ones((recipe.images, recipe.points, 1), np.int32),
        "boxes": np.stack(boxes),
        "targets": np.stack(targets),
    }


def batches(config: SamConfig, recipe: ShapesRecipe, seed: int) -> Iterator[dict]:
    """Every batch of the run, in order."""
    for step in range(recipe.steps):
        yield make_batch(config, recipe, seed, step)


# --------------------------------------------------------------------------- evaluation


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boolean masks (..., H, W) pairwise over the leading axes (broadcast); 0 / 0 -> 0."""
    inter = np.logical_and(a, b).sum(axis=(-2, -1))
    union = np.logical_or(a, b).sum(axis=(-2, -1))
    return inter / np.maximum(union, 1)


#: held-out scene sizes: square, landscape, portrait (the predictor resizes and pads them)
EVAL_SIZES = ((256, 256), (192, 256), (256, 208), (320, 320))


def evaluate(predictor: Any, seed: int, scenes: int) -> dict[str, float]:
    """Mean IoU against the ground truth of ``SamPredictor`` masks on ``scenes`` held-out scenes
    (``np.random.default_rng(seed)``, sizes cycling through ``EVAL_SIZES``), one point and one
    box prompt per object (``sample_points`` / ``sample_boxes`` with the default jitter):

    - ``points_best``: the best of the three multimask outputs of the point (SAM's oracle);
    - ``points_top``: the output the IoU head scores highest (what the automatic generator
      keeps);
    - ``boxes``: the single mask of the box.
    Also ``objects``, the number of objects. Works with any framework's predictor."""
    rng = np.random.default_rng(seed)
    best, top, box_iou = [], [], []
    for i in range(scenes):
        h, w = EVAL_SIZES[i % len(EVAL_SIZES)]
        image, masks = scene(rng, h, w)
        if not len(masks):
            continue
        predictor.set_image(image)
        points, boxes = sample_points(rng, masks), sample_boxes(rng, masks)
        for mask, point, box in zip(masks, points, boxes, strict=True):
            out, scores, _ = predictor.predict(point_coords=point[None], point_labels=[1])
            ious = mask_iou(out, mask[None])
            best.append(ious.max())
            top.append(ious[int(np.argmax(scores))])
            out, _, _ = predictor.predict(box=box, multimask_output=False)
            box_iou.append(mask_iou(out[0], mask))
    return {
        "points_best": float(np.mean(best)),
        "points_top": float(np.mean(top)),
        "boxes": float(np.mean(box_iou)),
        "objects": len(best),
    }


# --------------------------------------------------------------------------- PyTorch reference


def reference_loss(model, batch: dict, recipe: ShapesRecipe):
    """The recipe's loss of ``model`` (reference ``Sam``) on one ``make_batch`` batch: a scalar
    tensor, differentiable."""
    import torch
    import torch.nn.functional as F

    x = {k: torch.from_numpy(v) for k, v in batch.items()}
    embeddings = model.image_encoder(x["images"])
    encoder, decoder = model.prompt_encoder, model.mask_decoder
    image_pe = encoder.get_dense_pe()
    p = recipe.points
    losses = []
    for i in range(recipe.images):
        sparse_p, dense_p = encoder((x["point_coords"][i], x["point_labels"][i]), None, None)
        sparse_b, dense_b = encoder(None, x["boxes"][i], None)
        masks, iou_pred = decoder.predict_masks(
            embeddings[i : i + 1],
            image_pe,
            torch.cat([sparse_p, sparse_b]),
            torch.cat([dense_p, dense_b]),
        )  # (R, M + 1, h, w), (R, M + 1)
        target = x["targets"][i][:, None].expand_as(masks)
        bce = F.binary_cross_entropy_with_logits(masks, target, reduction="none").mean((2, 3))
        prob = torch.sigmoid(masks)
        inter = (prob * target).sum((2, 3))
        dice = 1 - (2 * inter + 1) / (prob.sum((2, 3)) + target.sum((2, 3)) + 1)
        mask_loss = bce + recipe.dice_weight * dice
        with torch.no_grad():
            hard = masks > 0
            truth = target > 0.5
            union = (hard | truth).sum((2, 3)).clamp(min=1)
            iou_true = (hard & truth).sum((2, 3)) / union
        iou_loss = (iou_pred - iou_true) ** 2
        multi = mask_loss[:p, 1:]
        best = F.one_hot(multi.detach().argmin(1), multi.shape[1]).to(multi.dtype)
        point_loss = (multi * best).sum(1) + recipe.iou_weight * iou_loss[:p, 1:].mean(1)
        box_loss = mask_loss[p:, 0] + recipe.iou_weight * iou_loss[p:, 0]
        losses.append(torch.cat([point_loss, box_loss]))
    return torch.cat(losses).mean()


def reference_train(
    model,
    recipe: ShapesRecipe,
    seed: int,
    log: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train the reference ``Sam`` in place with the recipe on the batches of ``seed``; returns
    every step's loss (before that step's update). ``log(step, loss, seconds)`` is called after
    each step."""

    from zoo.training import torch_optimizer

    optimizer = torch_optimizer(recipe.optimizer, model.parameters())
    rates = recipe.learning_rates()
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(recipe.steps):
        batch = make_batch(model.config, recipe, seed, step)
        for group in optimizer.param_groups:
            group["lr"] = float(rates[step])
        loss = reference_loss(model, batch, recipe)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if log is not None:
            log(step, losses[-1], time.perf_counter() - start)
    model.eval()
    return losses


def with_steps(recipe: ShapesRecipe, steps: int) -> ShapesRecipe:
    """The recipe over ``steps`` steps (warm-up shortened to fit)."""
    return dataclasses.replace(recipe, steps=steps, warmup=min(recipe.warmup, max(steps // 2, 1)))

"""``sam-generate``: Segment Anything's automatic mask generator on one photo, from the command line
(also ``python -m zoo.amg_cli``).

    sam-generate photo.jpg --checkpoint sam_vit_b_01ec64.pth                  # reference (PyTorch)
    sam-generate photo.jpg --checkpoint sam_b.keras --framework keras --backend jax
    sam-generate photo.jpg --checkpoint sam_b.safetensors --framework flax -o out/photo --force

The checkpoint is any file ``weight-convert`` reads (an official SAM ``.pth``, converted Keras /
Flax files, Hugging Face directories), holding a whole SAM (image encoder, prompt encoder, mask
decoder); its architecture comes from the file. The photo is read with Pillow (EXIF orientation
applied, converted to RGB). Writes ``OUT.json``: the generator's records with
``output_mode="coco_rle"`` (``annotations``), the image's file name and size, the framework, the
checkpoint and every generator setting; and ``OUT.png``: each mask in a random colour (seeded by
``--seed``) blended over the photo, largest first so small masks stay visible, outlines with
``--outlines``. Both files are published together or not at all (``weight_convert.outputs``).

Every generator argument is an option with ``segment-anything``'s default; ``--point-grids``
takes a ``.npy`` (one (N, 2) grid in [0, 1]) or ``.npz`` (one array per crop layer, in the order
stored) instead of ``--points-per-side``.

Failures (a missing or unreadable photo or checkpoint, a checkpoint of another model, an output
that exists) print one line, ``sam-generate: error: ...``, and exit with the converter's codes
(``weight_convert.errors.EXIT_CODES``; ``--help`` lists those this command uses); Ctrl-C and
SIGTERM too (130, 143), leaving no partial output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from weight_convert import outputs, quiet, signals
from weight_convert.errors import (
    EXIT_CODES,
    CheckpointError,
    ConvertError,
    EmptyFileError,
    Interrupted,
    MissingFileError,
    NotACheckpointError,
    UsageError,
    WrongModelError,
    one_line,
)

__all__ = ["FRAMEWORKS", "build_parser", "generator_settings", "main", "overlay", "read_image"]

PROG = "sam-generate"
FRAMEWORKS = ("torch", "keras", "flax")
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
#: the exit codes this command can return (a subset of the converter's)
USED_CODES = (0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 130, 143)
#: segment-anything's ``SamAutomaticMaskGenerator`` arguments and defaults (output_mode aside:
#: the JSON holds COCO RLE)
DEFAULTS: dict[str, Any] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "crop_nms_thresh": 0.7,
    "crop_overlap_ratio": 512 / 1500,
    "crop_n_points_downscale_factor": 1,
    "min_mask_region_area": 0,
}


# ---------------------------------------------------------------- inputs


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The photo at ``path`` as (H, W, 3) uint8 RGB (EXIF orientation applied). A missing, empty,
    unrecognised or truncated file is a one-line ``ConvertError``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no such image: {path}")
    if not path.is_file():
        raise NotACheckpointError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise EmptyFileError(f"image file is empty: {path}")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise NotACheckpointError(f"{path}: not an image Pillow reads") from None
    except Image.DecompressionBombError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise CheckpointError(f"{path}: unreadable image ({one_line(e, 200)})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise CheckpointError(f"{path}: image of shape {rgb.shape}, not (H, W, 3)")
    return np.ascontiguousarray(rgb)


def read_point_grids(path: str | os.PathLike) -> list[np.ndarray]:
    """``--point-grids``: a ``.npy`` (one grid) or ``.npz`` (one per crop layer) of (N, 2) float
    points in [0, 1]; no pickles."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such point-grid file: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        grids = [loaded[k] for k in loaded.files] if hasattr(loaded, "files") else [loaded]
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointError(
            f"{path}: not a .npy / .npz of point grids ({one_line(e, 200)})"
        ) from None
    for g in grids:
        if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0 or g.dtype.kind not in "fiu":
            raise UsageError(f"{path}: a point grid must be (N >= 1, 2) numbers, got {g.shape}")
        if not np.all((g >= 0) & (g <= 1)):
            raise UsageError(f"{path}: point grids hold coordinates in [0, 1]")
    return [np.asarray(g, np.float64) for g in grids]


def generator_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The generator's keyword arguments from the command line (``output_mode="coco_rle"``)."""
    settings = {k: getattr(args, k) for k in DEFAULTS}
    settings["point_grids"] = None
    if args.point_grids is not None:
        settings["points_per_side"] = None
        settings["point_grids"] = read_point_grids(args.point_grids)
    settings["output_mode"] = "coco_rle"
    return settings


# ---------------------------------------------------------------- the model and its generator


def _load(framework: str, checkpoint: str, backend: str | None):
    """(model, generator class, framework label) of the checkpoint, which must hold a whole
    SAM: its config is read (and checked) before any weight is set."""
    from weight_convert import loading

    if framework != "keras" and backend is not None:
        raise UsageError("--backend is for --framework keras")
    if framework == "keras":
        backend = backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
        keras = sys.modules.get("keras")
        if keras is not None and keras.backend.backend() != backend:
            raise UsageError(
                f"Keras is already imported on the {keras.backend.backend()} backend in this "
                f"process; --backend {backend} needs a new one"
            )
        os.environ["KERAS_BACKEND"] = backend  # before keras is imported
    source = loading.read_checkpoint(checkpoint)
    config = source.config
    if config.family != "sam" or config.encoder_only:
        what = "SAM's image encoder alone" if config.family == "sam" else f"a {config.family}"
        raise WrongModelError(
            f"{checkpoint} holds {what} model; the mask generator needs a whole SAM (image "
            "encoder, prompt encoder, mask decoder)"
        )
    if framework == "torch":
        from zoo.mask_generator import SamAutomaticMaskGenerator

        return loading.load_torch(source), SamAutomaticMaskGenerator, "torch"
    if framework == "keras":
        from ports.keras.mask_generator import SamAutomaticMaskGenerator

        return loading.load_keras(source), SamAutomaticMaskGenerator, f"keras-{backend}"
    from ports.flax.mask_generator import SamAutomaticMaskGenerator

    return loading.load_flax(source), SamAutomaticMaskGenerator, "flax"


# ---------------------------------------------------------------- the overlay


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a 4-neighbour outside the mask (or on the photo's border)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay(
    image: np.ndarray,
    masks: list[np.ndarray],
    *,
    seed: int = 0,
    alpha: float = 0.5,
    outlines: bool = False,
) -> np.ndarray:
    """(H, W, 3) uint8: each (H, W) bool mask's colour (random, from ``seed``; the k-th mask
    given gets the k-th colour) blended over ``image`` with weight ``alpha``, the largest mask
    first so that smaller ones stay visible; ``outlines`` draws each mask's border opaque."""
    colors = np.random.default_rng(seed).integers(0, 256, size=(len(masks), 3)).astype(np.float32)
    out = image.astype(np.float32)
    order = sorted(range(len(masks)), key=lambda k: -int(masks[k].sum()))
    for k in order:
        m = masks[k]
        out[m] = (1 - alpha) * out[m] + alpha * colors[k]
        if outlines:
            out[_outline(m)] = colors[k]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the command


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Segment everything in a photo with SAM's automatic mask generator "
        "(segment-anything's SamAutomaticMaskGenerator, in PyTorch, Keras or Flax); write the "
        "masks as COCO RLE JSON (OUT.json) and an overlay (OUT.png).",
        epilog="exit codes: " + "; ".join(f"{c} {EXIT_CODES[c]}" for c in USED_CODES),
    )
    p.add_argument("image", help="the photo (any format Pillow reads; converted to RGB)")
    p.add_argument(
        "-c",
        "--checkpoint",
        required=True,
        help="a whole SAM in any file weight-convert reads: official .pth, Keras .keras / "
        ".weights.h5, Flax .safetensors / .msgpack, a Hugging Face directory",
    )
    p.add_argument("--framework", choices=FRAMEWORKS, default="torch", help="default: torch")
    p.add_argument(
        "--backend",
        choices=KERAS_BACKENDS,
        help="--framework keras: the Keras backend (sets KERAS_BACKEND before Keras is "
        "imported; default: KERAS_BACKEND, else tensorflow)",
    )
    p.add_argument(
        "-o",
        "--output",
        help="output path without suffix: writes OUTPUT.json and OUTPUT.png (default: "
        "./IMAGE-STEM_masks)",
    )
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    g = p.add_argument_group("generator (segment-anything's arguments and defaults)")
    grid = g.add_mutually_exclusive_group()
    grid.add_argument("--points-per-side", type=_positive_int, default=DEFAULTS["points_per_side"])
    grid.add_argument(
        "--point-grids",
        metavar="FILE",
        help=".npy (one (N, 2) grid in [0, 1]) or .npz (one per crop layer) instead of "
        "--points-per-side",
    )
    g.add_argument("--points-per-batch", type=_positive_int, default=DEFAULTS["points_per_batch"])
    g.add_argument("--pred-iou-thresh", type=float, default=DEFAULTS["pred_iou_thresh"])
    g.add_argument(
        "--stability-score-thresh", type=float, default=DEFAULTS["stability_score_thresh"]
    )
    g.add_argument(
        "--stability-score-offset", type=float, default=DEFAULTS["stability_score_offset"]
    )
    g.add_argument("--box-nms-thresh", type=float, default=DEFAULTS["box_nms_thresh"])
    g.add_argument("--crop-n-layers", type=_non_negative_int, default=DEFAULTS["crop_n_layers"])
    g.add_argument("--crop-nms-thresh", type=float, default=DEFAULTS["crop_nms_thresh"])
    g.add_argument(
        "--crop-overlap-ratio",
        type=float,
        default=DEFAULTS["crop_overlap_ratio"],
        help="%(default).4f",
    )
    g.add_argument(
        "--crop-n-points-downscale-factor",
        type=_positive_int,
        default=DEFAULTS["crop_n_points_downscale_factor"],
    )
    g.add_argument(
        "--min-mask-region-area",
        type=_non_negative_int,
        default=DEFAULTS["min_mask_region_area"],
        help="fill holes and remove islands below this many pixels (OpenCV; default 0: off)",
    )
    o = p.add_argument_group("overlay")
    o.add_argument("--seed", type=int, default=0, help="seed of the mask colours (default 0)")
    o.add_argument("--alpha", type=_fraction, default=0.5, help="mask opacity (default 0.5)")
    o.add_argument("--outlines", action="store_true", help="draw each mask's border, opaque")
    return p


def output_paths(image: str, output: str | None) -> list[Path]:
    stem = Path(output) if output else Path(f"{Path(image).stem}_masks")
    return [stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".png")]


def run(args: argparse.Namespace) -> int:
    from zoo.amg_agreement import segmentation_mask

    paths = output_paths(args.image, args.output)
    outputs.check_outputs(paths, replace=args.force)
    outputs.check_writable(paths)
    settings = generator_settings(args)
    image = read_image(args.image)
    start = time.perf_counter()
    model, generator_class, label = _load(args.framework, args.checkpoint, args.backend)
    loaded = time.perf_counter()
    try:
        generator = generator_class(model, **settings)
    except ValueError as e:  # a setting the generator refuses (its message names it)
        raise UsageError(str(e)) from None
    records = generator.generate(image)
    generated = time.perf_counter()
    document = {
        "image": {"file": str(args.image), "height": image.shape[0], "width": image.shape[1]},
        "framework": label,
        "checkpoint": str(args.checkpoint),
        "settings": {
            **{k: v for k, v in settings.items() if k != "point_grids"},
            "point_grids": None
            if settings["point_grids"] is None
            else [g.tolist() for g in settings["point_grids"]],
        },
        "annotations": records,
    }
    picture = overlay(
        image,
        [segmentation_mask(r["segmentation"]) for r in records],
        seed=args.seed,
        alpha=args.alpha,
        outlines=args.outlines,
    )

    def write(staged: list[Path]) -> None:
        from PIL import Image

        staged[0].write_text(json.dumps(document))
        Image.fromarray(picture).save(staged[1], format="PNG")

    outputs.atomic(paths, write, replace=args.force)
    print(
        f"{len(records)} masks ({label}): wrote {paths[0]}, {paths[1]}; seconds: load "
        f"{loaded - start:.1f}, generate {generated - loaded:.1f}"
    )
    return 0


def _say(message: object) -> None:
    print(f"{PROG}: {one_line(message)}", file=sys.stderr)


def _run(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        with quiet.run():
            code = run(args)
        signals.check()
        return code
    except KeyboardInterrupt:
        signals.record(signal.SIGINT)
        raise signals.interrupted() from None
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except Exception as e:
        signals.check()
        if not isinstance(e, ConvertError):
            raise  # a bug: keeps its traceback
        _say(f"error: {e}")
        return e.exit_code


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (argparse's usage errors exit 2 themselves)."""
    with signals.raising():
        try:
            return _run(argv)
        except Interrupted as e:
            e = signals.interrupted() if signals.received() else e
            _say(e)
            return e.exit_code


if __name__ == "__main__":
    signals.exit_after_run(main())

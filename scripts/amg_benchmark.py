"""Time and peak memory per photo of SAM's automatic mask generator: segment-anything's
``SamAutomaticMaskGenerator`` against ours (the reference, Keras on a backend, Flax), in one run.

    python scripts/amg_benchmark.py                                  # ViT-B at 1024, 32 x 32 points
    python scripts/amg_benchmark.py --points-per-side 16 --frameworks segment-anything flax
    python scripts/amg_benchmark.py --size tiny                      # the tests' tiny SAM: seconds

The model is SAM ViT-B at 1024 (``--size base``) built by segment-anything's own
``build_sam_vit_b()`` without a checkpoint (its default initialization, seeded), saved once as
an official-layout ``.pth`` into a temporary folder by a separate process; every framework
loads that file (segment-anything through ``build_sam_vit_b(checkpoint=...)``, ours through
``create_model(checkpoint=...)``), so all run the same weights on the same photo (scikit-image's
``astronaut``, 512 x 512) with the generator's defaults but ``--points-per-side``.

Each framework runs in its own process: ``build`` is the model's construction and loading, the
baseline RSS is ``ru_maxrss`` right after it, ``first`` is the first ``generate`` (compilation
included), ``warm`` a second one, ``peak RSS`` is ``ru_maxrss`` at the end. This script imports
no framework, so the high-water mark a child inherits from it at exec is small. Ratios are to
segment-anything's generator, from this one run; times depend on the machine (state the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = (
    "segment-anything",
    "reference",
    "keras-tensorflow",
    "keras-jax",
    "keras-torch",
    "flax",
)
DEFAULT_FRAMEWORKS = ("segment-anything", "reference", "keras-jax", "flax")


def _tiny_config():
    sys.path.insert(0, str(ROOT / "parity_tests"))
    from test_mask_generator import TINY

    return TINY


def _official_module(size: str):
    import torch

    torch.manual_seed(0)
    if size == "base":
        from segment_anything import build_sam_vit_b

        return build_sam_vit_b()
    sys.path.insert(0, str(ROOT / "parity_tests"))
    import checkpoint_factory

    return checkpoint_factory.official_sam_module(_tiny_config())


def make_checkpoint(size: str, path: str) -> None:
    import torch

    torch.save(_official_module(size).eval().state_dict(), path)


def _photo():
    from skimage import data

    return data.astronaut()


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def child(framework: str, size: str, checkpoint: str, points_per_side: int) -> dict:
    """One framework: build, generate twice; what the table shows, as a dict."""
    import time

    if framework.startswith("keras-"):
        os.environ["KERAS_BACKEND"] = framework.split("-", 1)[1]
    image = _photo()
    start = time.perf_counter()
    if framework == "segment-anything":
        import torch
        from segment_anything import SamAutomaticMaskGenerator, build_sam_vit_b

        if size == "base":
            model = build_sam_vit_b(checkpoint=checkpoint)
        else:
            model = _official_module(size)
            model.load_state_dict(torch.load(checkpoint, weights_only=True))
        generator_class = SamAutomaticMaskGenerator
    elif framework == "reference":
        from zoo.mask_generator import SamAutomaticMaskGenerator
        from zoo.models import create_model

        model, generator_class = create_model(checkpoint=checkpoint), SamAutomaticMaskGenerator
    elif framework == "flax":
        from ports.flax.mask_generator import SamAutomaticMaskGenerator
        from ports.flax.models import create_model

        model, generator_class = create_model(checkpoint=checkpoint), SamAutomaticMaskGenerator
    else:
        from ports.keras.mask_generator import SamAutomaticMaskGenerator
        from ports.keras.models import create_model

        model, generator_class = create_model(checkpoint=checkpoint), SamAutomaticMaskGenerator
    generator = generator_class(model, points_per_side=points_per_side)
    build = time.perf_counter() - start
    baseline = _rss_mb()
    start = time.perf_counter()
    masks = generator.generate(image)
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = generator.generate(image)
    warm = time.perf_counter() - start
    return {
        "framework": framework,
        "build_s": build,
        "first_s": first,
        "warm_s": warm,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _rss_mb(),
        "masks": len(masks),
        "masks_again": len(again),
    }


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(DEFAULT_FRAMEWORKS))
    p.add_argument("--size", choices=("base", "tiny"), default="base", help="ViT-B at 1024 or tiny")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--make-checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.make_checkpoint:
        make_checkpoint(args.size, args.make_checkpoint)
        return 0
    if args.child:
        row = child(args.child, args.size, args.checkpoint, args.points_per_side)
        print("ROW " + json.dumps(row))
        return 0

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    me = [sys.executable, str(Path(__file__).resolve()), "--size", args.size]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = str(Path(folder) / f"sam_{args.size}_random.pth")
        subprocess.run([*me, "--make-checkpoint", checkpoint], env=env, check=True)
        for framework in args.frameworks:
            cmd = [*me, "--child", framework, "--checkpoint", checkpoint]
            cmd += ["--points-per-side", str(args.points_per_side)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [x for x in done.stdout.splitlines() if x.startswith("ROW ")]
            if done.returncode != 0 or not lines:
                print(f"{framework}: failed (exit {done.returncode})\n{done.stderr[-3000:]}")
                return 1
            rows.append(json.loads(lines[-1][4:]))
            print(f"{framework}: done ({rows[-1]['first_s']:.1f} s first)", file=sys.stderr)
    base = next((r for r in rows if r["framework"] == "segment-anything"), None)

    def ratio(row, key):
        return f"{row[key] / base[key]:.2f}x" if base and base[key] else "-"

    print(
        f"SAM {'ViT-B at 1024' if args.size == 'base' else 'tiny'}, astronaut 512 x 512, "
        f"{args.points_per_side} x {args.points_per_side} points, defaults; {_cpu()}, "
        f"{os.cpu_count()} CPUs"
    )
    head = ("framework", "masks", "build s", "first s", "warm s", "warm ratio", "base RSS MB")
    head += ("peak RSS MB", "peak ratio")
    print(" | ".join(head))
    for r in rows:
        print(
            " | ".join(
                [
                    r["framework"],
                    str(r["masks"]),
                    f"{r['build_s']:.1f}",
                    f"{r['first_s']:.1f} ({ratio(r, 'first_s')})",
                    f"{r['warm_s']:.1f}",
                    ratio(r, "warm_s"),
                    f"{r['baseline_rss_mb']:.0f}",
                    f"{r['peak_rss_mb']:.0f}",
                    ratio(r, "peak_rss_mb"),
                ]
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The automatic mask generator on the shipped trained SAM (``zoo/weights/sam_shapes.pth``): the
reference, Keras (this process's ``KERAS_BACKEND``, TensorFlow by default) and Flax on held-out
synthetic scenes, at thresholds the small model's scores reach; prints the per-mask agreement
table (``zoo.amg_agreement``: near-ties counted and named, anything else a failure) and exits 1
on a failure. Part of the main command (``scripts/parity.sh``).

    python scripts/amg_parity.py
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from zoo.mask_generator import RecordLogits, StableTiesMaskGenerator  # noqa: E402  (torch first)

#: thresholds where the small model's scores reach (predicted IoUs ~0.2-0.3, stability 0.5-0.8)
SETTINGS = dict(
    points_per_side=16,
    pred_iou_thresh=0.25,
    stability_score_thresh=0.7,
    min_mask_region_area=20,
)
#: held-out scenes: (seed, height, width)
SCENES = ((2026, 240, 320), (7, 200, 280))


def main() -> int:
    import keras

    from ports.flax.mask_generator import SamAutomaticMaskGenerator as FlaxGenerator
    from ports.flax.models import create_model as flax_model
    from ports.keras.mask_generator import SamAutomaticMaskGenerator as KerasGenerator
    from ports.keras.models import create_model as keras_model
    from zoo.amg_agreement import agreement
    from zoo.models import create_model
    from zoo.sam_training import SAM_SHAPES_WEIGHTS
    from zoo.synthetic_scenes import scene

    reference = StableTiesMaskGenerator(create_model(checkpoint=SAM_SHAPES_WEIGHTS), **SETTINGS)
    ports = {
        f"keras-{keras.backend.backend()}": KerasGenerator(
            keras_model(checkpoint=SAM_SHAPES_WEIGHTS), **SETTINGS
        ),
        "flax": FlaxGenerator(flax_model(checkpoint=SAM_SHAPES_WEIGHTS), **SETTINGS),
    }
    print(f"automatic mask generator, sam_shapes, {SETTINGS}")
    failed = False
    for seed, h, w in SCENES:
        image = scene(np.random.default_rng(seed), h, w)[0]
        start = time.perf_counter()
        expected = reference.generate(image)
        took = {"torch": time.perf_counter() - start}
        logits = RecordLogits(reference, image)
        for name, generator in ports.items():
            start = time.perf_counter()
            got = generator.generate(image)
            took[name] = time.perf_counter() - start
            report = agreement(expected, got, reference, logits)
            row = ", ".join(f"{k} {v}" for k, v in report.row().items())
            verdict = "PASS" if report.ok else "FAIL"
            print(f"  scene {seed} {h}x{w}  {name:<17} {verdict}: {row}")
            for line in report.near_ties + report.failures:
                print(f"      {line}")
            failed |= not report.ok
        print(
            "    seconds (first run, compiling included): "
            + ", ".join(f"{k} {v:.1f}" for k, v in took.items())
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

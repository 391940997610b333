"""Forward-pass benchmark: Swin-T (batch 8, 224), Video Swin-T (1 x 16 x 224 x 224) and the SAM
ViT-B image encoder (1 x 1024 x 1024) in every implementation, in one run, printed as ratios to
the peers: torchvision and timm for Swin-T, torchvision for Video Swin-T, timm
``samvit_base_patch16`` and keras-hub's ``ViTDetBackbone`` (``pip install keras-hub``, the
``bench`` extra) for SAM.

    python scripts/benchmark.py                     # everything (many minutes on 2 cores)
    python scripts/benchmark.py --models swin_t --impls reference torchvision keras-jax
    python scripts/benchmark.py --models sam_b_encoder

Each implementation runs in its own process (one Keras backend per process, no thread pools
fighting), one after another; a process warms up (compiles) first and reports the median of
``--repeats`` timed calls. fp32, inference mode, random weights. Times are wall-clock seconds per
forward pass; ratio = time / peer time (lower is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {
    # name: (zoo variant, reference input shape (channels-first), torchvision builder, timm name)
    "swin_t": (
        "swin_tiny_patch4_window7_224",
        (8, 3, 224, 224),
        "swin_t",
        "swin_tiny_patch4_window7_224",
    ),
    "video_swin_t": ("video_swin_tiny", (1, 3, 16, 224, 224), "swin3d_t", None),
    "sam_b_encoder": ("samvit_base_patch16", (1, 3, 1024, 1024), None, "samvit_base_patch16"),
}
IMPLS = [
    "torchvision",
    "timm",
    "keras-hub-tensorflow",
    "keras-hub-jax",
    "reference",
    "reference-compile",
    "keras-tensorflow",
    "keras-jax",
    "flax",
]
PEERS = ("torchvision", "timm", "keras-hub-tensorflow", "keras-hub-jax")


def _timeit(fn, repeats: int) -> dict[str, float]:
    start = time.perf_counter()
    fn()  # warm-up: compilation, allocation
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "first_call": first, "repeats": repeats}


def _torch_fn(impl: str, model: str):
    import torch

    variant, shape, tv_name, timm_name = MODELS[model]
    if impl == "torchvision":
        import torchvision

        if tv_name is None:
            return None
        ns = torchvision.models.video if len(shape) == 5 else torchvision.models
        module = getattr(ns, tv_name)()
    elif impl == "timm":
        import timm

        if timm_name is None:
            return None
        module = timm.create_model(timm_name, pretrained=False)
        if model == "sam_b_encoder":  # the encoder's output, as ours: no pooling head
            module = _Features(module)
    else:
        from zoo.models import create_model

        module = create_model(variant)
    module.eval()
    if impl == "reference-compile":
        module = torch.compile(module)
    x = torch.randn(shape)

    def run():
        with torch.inference_mode():
            module(x)

    return run


def _Features(module):
    import torch

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x):
            return self.inner.forward_features(x)

    return Features()


def _keras_hub_backbone(model: str):
    """keras-hub's ViTDet backbone (SAM's image encoder) with SAM ViT-B's sizes."""
    if model != "sam_b_encoder":
        return None
    from keras_hub.models import ViTDetBackbone

    from zoo.configs import VARIANTS

    config = VARIANTS[MODELS[model][0]].config
    return ViTDetBackbone(
        hidden_size=config.encoder_embed_dim,
        num_layers=config.encoder_depth,
        intermediate_dim=int(config.encoder_embed_dim * config.mlp_ratio),
        num_heads=config.encoder_num_heads,
        global_attention_layer_indices=list(config.encoder_global_attn_indexes),
        image_shape=(config.img_size, config.img_size, config.in_chans),
        patch_size=config.patch_size,
        num_output_channels=config.out_chans,
        window_size=config.window_size,
    )


def _keras_fn(model: str, keras_hub: bool = False):
    import keras
    import numpy as np

    variant, shape, _, _ = MODELS[model]
    if keras_hub:
        module = _keras_hub_backbone(model)
        if module is None:
            return None
    else:
        from ports.keras.models import create_model

        module = create_model(variant)
    x = np.random.default_rng(0).standard_normal((shape[0], *shape[2:], shape[1]), np.float32)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda t: module(t, training=False), jit_compile=True)
        xt = tf.constant(x)
        return lambda: fn(xt).numpy()
    if backend == "jax":
        import jax

        trainable = [v.value for v in module.trainable_variables]
        non_trainable = [v.value for v in module.non_trainable_variables]

        @jax.jit
        def fn(tv, ntv, t):
            return module.stateless_call(tv, ntv, t, training=False)[0]

        xj = jax.numpy.asarray(x)
        return lambda: fn(trainable, non_trainable, xj).block_until_ready()
    raise SystemExit(f"no benchmark path for the Keras {backend} backend")


def _flax_fn(model: str):
    import jax
    import numpy as np
    from flax import nnx

    from ports.flax.models import create_model

    variant, shape, _, _ = MODELS[model]
    module = create_model(variant)
    x = jax.numpy.asarray(
        np.random.default_rng(0).standard_normal((shape[0], *shape[2:], shape[1]), np.float32)
    )
    fn = nnx.jit(lambda m, t: m(t))
    return lambda: fn(module, x).block_until_ready()


def worker(impl: str, model: str, repeats: int) -> dict:
    if impl.startswith("keras-hub-"):
        fn = _keras_fn(model, keras_hub=True)
    elif impl.startswith("keras-"):
        fn = _keras_fn(model)
    elif impl == "flax":
        fn = _flax_fn(model)
    else:
        fn = _torch_fn(impl, model)
    if fn is None:
        return {"skipped": f"{impl} has no {model}"}
    return _timeit(fn, repeats)


def _spawn(impl: str, model: str, repeats: int, timeout: float) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if impl.startswith("keras-"):
        env["KERAS_BACKEND"] = impl.rsplit("-", 1)[-1]
    cmd = [sys.executable, __file__, "--worker", impl, "--models", model, "--repeats", str(repeats)]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s (compilation included)"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": tail[-200:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--impls", nargs="+", default=IMPLS, choices=IMPLS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per implementation and model"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.models[0], args.repeats)))
        return 0

    results: dict[str, dict[str, dict]] = {}
    for model in args.models:
        results[model] = {}
        for impl in args.impls:
            r = _spawn(impl, model, args.repeats, args.timeout)
            results[model][impl] = r
            shown = r.get("seconds")
            status = f"{shown:.3f} s" if shown is not None else r.get("error") or r.get("skipped")
            print(f"  {model:<13} {impl:<20} {status}", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
        return 0

    import torch

    print(
        f"forward pass, fp32, median of {args.repeats} after one warm-up call; "
        f"{torch.get_num_threads()} CPU threads; ratio = time / peer time"
    )
    for model, rows in results.items():
        _, shape, _, _ = MODELS[model]
        peers = [p for p in PEERS if rows.get(p, {}).get("seconds")]
        print(f"\n{model} input {'x'.join(map(str, shape))}")
        head = f"  {'implementation':<20} {'seconds':>9} {'first call':>11}"
        print(head + "".join(f"{'/ ' + p:>23}" for p in peers))
        for impl, r in rows.items():
            if "seconds" not in r:
                print(f"  {impl:<20} {r.get('error') or r.get('skipped')}")
                continue
            line = f"  {impl:<20} {r['seconds']:9.3f} {r['first_call']:11.2f}"
            line += "".join(f"{r['seconds'] / rows[p]['seconds']:23.2f}" for p in peers)
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

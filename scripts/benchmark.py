"""Forward-pass benchmark: Swin-T (batch 8, 224), Video Swin-T (1 x 16 x 224 x 224) and the SAM
ViT-B image encoder (1 x 1024 x 1024) in every implementation, in one run, printed as ratios to
the peers: torchvision and timm for Swin-T, torchvision for Video Swin-T, timm
``samvit_base_patch16`` and keras-hub's ``ViTDetBackbone`` (``pip install keras-hub``, the
``bench`` extra) for SAM.

    python scripts/benchmark.py                     # everything (many minutes on 2 cores)
    python scripts/benchmark.py --models swin_t --impls reference torchvision keras-jax
    python scripts/benchmark.py --models sam_b_encoder
    python scripts/benchmark.py --train                   # one training step instead
    python scripts/benchmark.py --models sam_b_encoder --impls timm flax --profile 12
    python scripts/benchmark.py --train --keep-memory     # zoo.cpu_memory.keep_freed_memory()
    python scripts/benchmark.py --train --rounds 3        # each one's median over 3 rounds
    python scripts/benchmark.py --train --hugepages       # malloc on transparent huge pages
    python scripts/benchmark.py --device gpu --dtype bfloat16   # scripts/bench_device.py

Each implementation runs in its own process (one Keras backend per process, no thread pools
fighting), one after another; a process warms up first (``--warmup`` calls: 1, 5 for training
steps; the first compiles) and reports the median of ``--repeats`` timed calls. fp32 on the
CPU unless ``--device`` / ``--dtype`` say otherwise (``scripts/bench_device.py``), inference
mode, random weights. Times are wall-clock seconds per forward pass; ratio = time / peer time
(lower is faster); "first call" is the first warm-up call's time (tracing and compilation
included).

``--train`` times one training step (``scripts/benchmark_train.py``: forward, loss, backward,
AdamW) of its models against torchvision, timm and segment-anything. ``--profile N`` runs one
more call under the framework's own profiler and prints the N ops with the most time: PyTorch's
aten ops by self CPU time; for XLA (Keras on JAX or TensorFlow, Flax) the executor's time per
kind of HLO instruction (``ynn_fusion``: a matrix product with what XLA fused into it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_device import (  # noqa: E402
    DEVICES,
    DTYPES,
    KERAS_POLICY,
    describe,
    flax_compute_dtype,
    require_gpu,
    torch_autocast,
    torch_device,
    torch_sync,
    worker_env,
)

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
TRAIN_PEERS = ("torchvision", "timm", "segment-anything")


def _timeit(fn, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of ``repeats`` calls after ``warmup`` untimed ones, and the memory the
    timed calls took fresh from the kernel (minor page faults, MiB per call): XLA:CPU allocates
    its temporaries per call, and glibc maps a large block anew each time, so every page of it is
    faulted in and zeroed again (1.4 GiB per Swin-T training step in Flax; ``--keep-memory``,
    ``--hugepages``). "first call" is the first warm-up call (compilation included)."""
    import resource

    start = time.perf_counter()
    fn()  # compilation, allocation
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn()
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    fresh = faults * resource.getpagesize() / 2**20 / repeats
    return {
        "seconds": statistics.median(times),
        "first_call": first,
        "repeats": repeats,
        "fresh_mib": fresh,
    }


# --- profile mode: one more call under the framework's own profiler, the top ops by time ------


def _top_ops(totals: dict[str, tuple[float, int]], top: int) -> list[list]:
    """[[op, milliseconds, calls], ...] for the ``top`` ops with the most time; ``totals``: op
    -> (seconds, calls)."""
    rows = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
    return [[name, round(seconds * 1e3, 3), calls] for name, (seconds, calls) in rows]


def _profile_torch(fn, top: int) -> list[list]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    totals = {e.key: (e.self_cpu_time_total * 1e-6, e.count) for e in prof.key_averages()}
    return _top_ops(totals, top)


def _xla_op_times(events) -> dict[str, tuple[float, int]]:
    """Per kind of HLO instruction, the durations (s) of the XLA:CPU executor's events (those
    with an ``hlo_op`` stat); ``events`` yields (hlo_op or None, seconds). The kind is the
    instruction's name without XLA's numbering (``ynn_fusion.87`` -> ``ynn_fusion``: a
    matrix product through XNNPACK; ``select_select_fusion`` is erf's, ...)."""
    totals: dict[str, tuple[float, int]] = {}
    for op, seconds in events:
        if op:
            kind = re.sub(r"([._]\d+)+$", "", op)
            total, calls = totals.get(kind, (0.0, 0))
            totals[kind] = (total + seconds, calls + 1)
    return totals


def _profile_jax(fn, top: int) -> list[list]:
    import glob
    import tempfile

    import jax

    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir):
            fn()
        (path,) = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        data = jax.profiler.ProfileData.from_file(path)

        def events():
            for plane in data.planes:
                for line in plane.lines:
                    for e in line.events:
                        yield dict(e.stats).get("hlo_op"), e.duration_ns * 1e-9

        return _top_ops(_xla_op_times(events()), top)


def _profile_tensorflow(fn, top: int) -> list[list]:
    import glob
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        fn()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        space = xplane_pb2.XSpace.FromString(Path(path).read_bytes())

    def events():
        for plane in space.planes:
            hlo_stat = [i for i, m in plane.stat_metadata.items() if m.name == "hlo_op"]
            for line in plane.lines:
                for e in line.events:
                    op = None
                    for st in e.stats:
                        if st.metadata_id in hlo_stat:
                            op = st.str_value or plane.stat_metadata.get(st.ref_value).name
                    yield op, e.duration_ps * 1e-12

    return _top_ops(_xla_op_times(events()), top)


def _torch_fn(impl: str, model: str, device: str = "cpu", dtype: str = "float32"):
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
    dev = torch_device(device)
    module.eval().to(dev)
    if impl == "reference-compile":
        module = torch.compile(module)
    x = torch.randn(shape, device=dev)

    def run():
        with torch.inference_mode(), torch_autocast(dev, dtype):
            module(x)
        torch_sync(dev)

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


def _keras_fn(model: str, keras_hub: bool = False, dtype: str = "float32"):
    import keras
    import numpy as np

    variant, shape, _, _ = MODELS[model]
    keras.config.set_dtype_policy(KERAS_POLICY[dtype])
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


def _flax_fn(model: str, dtype: str = "float32"):
    import jax
    import numpy as np
    from flax import nnx

    from ports.flax.models import create_model

    variant, shape, _, _ = MODELS[model]
    module = create_model(variant, dtype=flax_compute_dtype(dtype))
    x = jax.numpy.asarray(
        np.random.default_rng(0).standard_normal((shape[0], *shape[2:], shape[1]), np.float32)
    )
    # cached_partial: nnx.jit would walk the module's graph again on every call
    fn = nnx.cached_partial(nnx.jit(lambda m, t: m(t)), module)
    return lambda: fn(x).block_until_ready()


def _profiler(impl: str):
    if impl in ("flax", "keras-jax", "keras-hub-jax"):
        return _profile_jax
    if impl in ("keras-tensorflow", "keras-hub-tensorflow"):
        return _profile_tensorflow
    return _profile_torch


#: implementations that run on JAX (``keep_freed_memory`` sets JAX's dispatch in these alone)
JAX_IMPLS = ("flax", "keras-jax", "keras-hub-jax")


def worker(
    impl: str,
    model: str,
    repeats: int,
    profile: int = 0,
    train: bool = False,
    smoke: bool = False,
    keep_memory: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    warmup: int = 1,
) -> dict:
    if keep_memory:  # before any framework computes: JAX reads its dispatch option then
        from zoo.cpu_memory import keep_freed_memory

        keep_freed_memory(jax=impl in JAX_IMPLS)
    if device == "gpu" and impl.startswith(("keras", "flax")):
        require_gpu("jax" if impl in JAX_IMPLS else "tensorflow")
    if train:
        from scripts.benchmark_train import train_fn

        fn = train_fn(impl, model, smoke, device=device, dtype=dtype)
    elif impl.startswith("keras-hub-"):
        fn = _keras_fn(model, keras_hub=True, dtype=dtype)
    elif impl.startswith("keras-"):
        fn = _keras_fn(model, dtype=dtype)
    elif impl == "flax":
        fn = _flax_fn(model, dtype=dtype)
    else:
        fn = _torch_fn(impl, model, device=device, dtype=dtype)
    if fn is None:
        return {"skipped": f"{impl} has no {model}"}
    result = _timeit(fn, repeats, warmup)
    if profile:
        result["profile"] = _profiler(impl)(fn, profile)
    return result


#: glibc's tunable that has malloc ask for transparent huge pages (``--hugepages``).
HUGEPAGES = "glibc.malloc.hugetlb=1"


def _spawn(
    impl: str,
    model: str,
    repeats: int,
    timeout: float,
    extra: list[str],
    hugepages: bool = False,
    device: str = "cpu",
) -> dict:
    env = worker_env(device, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if hugepages:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), HUGEPAGES]))
    if impl.startswith("keras-"):
        env["KERAS_BACKEND"] = impl.rsplit("-", 1)[-1]
    cmd = [sys.executable, __file__, "--worker", impl, "--models", model, "--repeats", str(repeats)]
    cmd += extra
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
    from scripts.benchmark_train import TRAIN_IMPLS, TRAIN_MODELS

    parser.add_argument("--models", nargs="+", choices=sorted({*MODELS, *TRAIN_MODELS}))
    parser.add_argument("--impls", nargs="+", choices=sorted({*IMPLS, *TRAIN_IMPLS}))
    parser.add_argument(
        "--train",
        action="store_true",
        help="time one training step (forward, loss, backward, AdamW) instead of the forward "
        "pass: scripts/benchmark_train.py's models and implementations",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="with --train: tiny configs, to check every path"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup",
        type=int,
        help="untimed calls before the timed ones (default 1; 5 with --train: a training run "
        "is thousands of steps, and over its first few the allocator's heap still grows, "
        "Flax's Video Swin-T step from 2.4 to 1.95 s by the fifth with --keep-memory)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the whole list of implementations this many times, one after another, and "
        "report each one's median over the rounds: a machine whose speed drifts over minutes "
        "(other tenants) then weighs on every implementation alike",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per implementation and model"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after the timed calls, profile one more (torch.profiler; jax.profiler / the "
        "TensorFlow profiler over XLA:CPU's executor) and print its N ops with the most time",
    )
    parser.add_argument(
        "--hugepages",
        action="store_true",
        help=f"run every implementation with GLIBC_TUNABLES={HUGEPAGES} (malloc asks for "
        "transparent huge pages): a large block mapped anew per call is then faulted in 2 MiB "
        "at a time instead of 4 KiB (see the 'fresh MiB' column)",
    )
    parser.add_argument(
        "--keep-memory",
        action="store_true",
        help="every implementation calls zoo.cpu_memory.keep_freed_memory() first: glibc keeps "
        "freed blocks for reuse and JAX dispatches synchronously, so XLA:CPU's per-call "
        "temporaries come from memory already faulted in",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where every implementation runs (scripts/bench_device.py; gpu: PyTorch on cuda, "
        "JAX on cuda, TF32 off everywhere)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="bfloat16: mixed precision (float32 parameters; torch.autocast, Keras' "
        "mixed_bfloat16 policy, the Flax port's dtype=bfloat16)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 5 if args.train else 1

    if args.worker:
        result = worker(
            args.worker,
            args.models[0],
            args.repeats,
            args.profile,
            args.train,
            args.smoke,
            args.keep_memory,
            args.device,
            args.dtype,
            args.warmup,
        )
        print(json.dumps(result))
        return 0
    models_table = TRAIN_MODELS if args.train else MODELS
    args.models = args.models or list(models_table)
    args.impls = args.impls or (TRAIN_IMPLS if args.train else IMPLS)
    unknown = [m for m in args.models if m not in models_table]
    if unknown:
        parser.error(f"no {'training' if args.train else 'forward'} benchmark for {unknown}")

    results: dict[str, dict[str, dict]] = {}
    extra = ["--profile", str(args.profile)] if args.profile else []
    extra += ["--train"] if args.train else []
    extra += ["--smoke"] if args.smoke else []
    extra += ["--keep-memory"] if args.keep_memory else []
    extra += ["--device", args.device, "--dtype", args.dtype, "--warmup", str(args.warmup)]
    for model in args.models:
        runs: dict[str, list[dict]] = {impl: [] for impl in args.impls}
        for round_ in range(args.rounds):
            for impl in args.impls:
                if round_ and "seconds" not in runs[impl][0]:
                    continue  # skipped or failed in the first round
                r = _spawn(
                    impl, model, args.repeats, args.timeout, extra, args.hugepages, args.device
                )
                runs[impl].append(r)
                shown = r.get("seconds")
                status = f"{shown:.3f} s" if shown else r.get("error") or r.get("skipped")
                print(f"  {model:<13} {impl:<20} {status}", file=sys.stderr)
        results[model] = {impl: _over_rounds(rs) for impl, rs in runs.items()}
    if args.json:
        print(json.dumps(results))
        return 0

    precision = "fp32 (TF32 off)" if args.dtype == "float32" else "mixed bfloat16"
    print(
        f"{'training step' if args.train else 'forward pass'}, {precision}, median of "
        f"{args.repeats} after {args.warmup} warm-up call{'s' if args.warmup > 1 else ''}"
        + (f", median of {args.rounds} rounds" if args.rounds > 1 else "")
        + f"; {describe(args.device)}; "
        "ratio = time / peer time; fresh MiB = memory faulted in per call"
        + (f"; GLIBC_TUNABLES={HUGEPAGES}" if args.hugepages else "")
        + ("; keep_freed_memory() in every process" if args.keep_memory else "")
    )
    for model, rows in results.items():
        shape = models_table[model][1]
        peers = [
            p for p in (TRAIN_PEERS if args.train else PEERS) if rows.get(p, {}).get("seconds")
        ]
        print(f"\n{model} input {'x'.join(map(str, shape))}")
        head = f"  {'implementation':<20} {'seconds':>9} {'first call':>11} {'fresh MiB':>10}"
        print(head + "".join(f"{'/ ' + p:>23}" for p in peers))
        for impl, r in rows.items():
            if "seconds" not in r:
                print(f"  {impl:<20} {r.get('error') or r.get('skipped')}")
                continue
            line = f"  {impl:<20} {r['seconds']:9.3f} {r['first_call']:11.2f}"
            line += f" {r.get('fresh_mib', float('nan')):10.0f}"
            line += "".join(f"{r['seconds'] / rows[p]['seconds']:23.2f}" for p in peers)
            print(line)
    if args.profile:
        _print_profiles(results)
    return 0


def _over_rounds(runs: list[dict]) -> dict:
    """One implementation's result over ``--rounds``: the median of each round's seconds and
    fresh MiB, the first round's first call (and profile)."""
    timed = [r for r in runs if "seconds" in r]
    if len(timed) < len(runs) or len(runs) == 1:
        return next((r for r in runs if "seconds" not in r), runs[0])
    out = dict(runs[0])
    out["seconds"] = statistics.median(r["seconds"] for r in runs)
    out["fresh_mib"] = statistics.median(r.get("fresh_mib", float("nan")) for r in runs)
    out["rounds"] = [r["seconds"] for r in runs]
    return out


def _print_profiles(results: dict[str, dict[str, dict]]) -> None:
    """The top ops of each implementation's profiled call: torch's by self CPU time (aten ops),
    XLA's by the executor's time per HLO instruction (fusions named by XLA)."""
    for model, rows in results.items():
        for impl, r in rows.items():
            if not r.get("profile"):
                continue
            total = sum(ms for _, ms, _ in r["profile"])
            print(f"\n{model} / {impl}: top ops of one call ({r['seconds']:.3f} s timed)")
            print(f"  {'op':<60} {'ms':>9} {'share':>6} {'calls':>6}")
            for name, ms, calls in r["profile"]:
                share = ms / (r["seconds"] * 1e3)
                print(f"  {name[:60]:<60} {ms:9.1f} {share:6.1%} {calls:6d}")
            print(f"  {'(these ops)':<60} {total:9.1f}")


if __name__ == "__main__":
    sys.exit(main())

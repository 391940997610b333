"""Memory benchmark of ``weight-convert convert`` on a SAM ViT-H sized checkpoint (issue 5).

Measures, for each conversion case, the wall time and the peak resident memory (RSS) of the
converter CLI (``python -m weight_convert convert SOURCE --to TARGET -o OUT --force``) run in a
fresh process, and compares the peak with the bound: 1.3 x the size of the source checkpoint.

    python scripts/convert_memory.py                        # every case (many minutes on 2 cores)
    python scripts/convert_memory.py --cases pth-flax safetensors-flax --json results.json
    python scripts/convert_memory.py --workdir /tmp/sam_h --keep   # keep the checkpoints

The checkpoint is generated, not downloaded: the official ``segment-anything`` key layout of
``sam_vit_h`` (594 tensors, 641 M float32 parameters, 2.56 GB; keys and shapes from
``zoo.configs.reference_shapes``, which are the official keys), random N(0, 0.02) values, written
once into ``--workdir`` as ``sam_vit_h.pth`` (``torch.save`` of a flat dict, zip format, as
``sam_vit_h_4b8939.pth`` ships) and ``sam_vit_h.safetensors`` (the same values). The Flax source
of the ``flax-torch-pth`` case is the ``pth-flax`` output, converted once and kept there too
(delete it after a change of the converter's Flax file format).

Peak RSS is ``ru_maxrss`` of the child from ``os.wait4``: the whole process, imports included.
On Linux a child's ``ru_maxrss`` includes the RSS high-water mark of the process that spawned it
(``subprocess`` forks with ``vfork``; exec folds the parent's mark into the child's), so this
script keeps its own process small and generates the checkpoint in a separate process. A sampler
reads ``/proc/PID/status`` every 50 ms for the anonymous and file-backed (mmap) parts of the RSS
(sampled maxima: peaks shorter than the interval may be missed). GB = 1e9 bytes. Cases run one
after another; their outputs are deleted after each case. The import-only baselines
(``python -c "import torch"`` etc.) are measured the same way, since imports count toward the
bound (``--no-imports`` skips them).

Exit code 0, even with cases above the bound (they are marked ``ABOVE``); 1 when a conversion
fails (non-zero exit code; the tail of its log is printed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANT = "sam_vit_h"
BOUND = 1.3
SAMPLE_SECONDS = 0.05

#: case -> (source: pth / safetensors / flax, --to, -o relative to the output folder, env)
CASES = {
    "pth-flax": ("pth", "flax", "out", {}),
    "pth-torch-safetensors": ("pth", "torch", "out.safetensors", {}),
    "safetensors-flax": ("safetensors", "flax", "out", {}),
    "safetensors-torch-pth": ("safetensors", "torch", "out.pth", {}),
    "pth-keras-jax": ("pth", "keras", "out", {"KERAS_BACKEND": "jax"}),
    "pth-keras-tensorflow": ("pth", "keras", "out", {"KERAS_BACKEND": "tensorflow"}),
    "pth-flax-msgpack": ("pth", "flax", "out.msgpack", {}),
    "flax-torch-pth": ("flax", "torch", "out.pth", {}),
    "flax-torch-safetensors": ("flax", "torch", "out.safetensors", {}),
}
SOURCES = {
    "pth": f"{VARIANT}.pth",
    "safetensors": f"{VARIANT}.safetensors",
    "flax": f"{VARIANT}_flax.safetensors",
}
#: import baseline -> (python -c code, env)
IMPORTS = {
    "python": ("pass", {}),
    "import numpy": ("import numpy", {}),
    "import torch": ("import torch", {}),
    "import jax, flax": ("import jax, flax.nnx", {}),
    "import keras (tensorflow)": ("import keras", {"KERAS_BACKEND": "tensorflow"}),
    "import keras (jax)": ("import keras", {"KERAS_BACKEND": "jax"}),
    "import torch, jax, flax": ("import torch, jax, flax.nnx", {}),
    "import weight_convert.convert": ("import weight_convert.convert", {}),
}


def _write_checkpoint(workdir: str) -> None:
    """Write the official-layout ``sam_vit_h`` checkpoint as .pth and .safetensors into
    ``workdir``: one float32 NumPy array per key (N(0, 1) x 0.02, the whole dict ~2.6 GB held
    once, as ``torch.save`` needs it), the safetensors file streamed from the same arrays.
    Runs in its own process (see the module docstring)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from zoo.configs import VARIANTS, reference_shapes

    rng = np.random.default_rng(0)
    arrays = {}
    for key, shape in reference_shapes(VARIANTS[VARIANT].config).items():
        value = rng.standard_normal(shape, dtype=np.float32)
        value *= 0.02
        arrays[key] = value

    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, value in arrays.items():
        header[key] = {
            "dtype": "F32",
            "shape": list(value.shape),
            "data_offsets": [offset, offset + value.nbytes],
        }
        offset += value.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    staged = os.path.join(workdir, SOURCES["safetensors"] + ".partial")
    with open(staged, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for value in arrays.values():
            f.write(memoryview(value).cast("B"))
    os.replace(staged, os.path.join(workdir, SOURCES["safetensors"]))

    staged = os.path.join(workdir, SOURCES["pth"] + ".partial")
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, staged)
    os.replace(staged, os.path.join(workdir, SOURCES["pth"]))


def ensure_checkpoint(workdir: Path) -> None:
    if all((workdir / SOURCES[s]).is_file() for s in ("pth", "safetensors")):
        return
    print(f"generating {VARIANT} checkpoints in {workdir} ...", file=sys.stderr)
    start = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(
        target=_write_checkpoint, args=(str(workdir),)
    )
    process.start()
    process.join()
    if process.exitcode != 0:
        sys.exit(f"checkpoint generation failed (exit code {process.exitcode})")
    print(f"  done in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def _status_kib(pid: int) -> dict[str, int]:
    """RssAnon / RssFile / VmHWM of ``pid`` in KiB (empty once it has exited)."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("RssAnon", "RssFile", "VmHWM"):
                    fields[name] = int(value.split()[0])
    except OSError:
        pass
    return fields


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run ``cmd`` and return its exit code, wall and CPU seconds, peak RSS (``ru_maxrss``) and
    the sampled peaks of its anonymous and file-backed RSS, in bytes."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    peaks: dict[str, int] = {}
    done = threading.Event()
    with open(log, "wb") as out:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                for name, kib in _status_kib(child.pid).items():
                    peaks[name] = max(peaks.get(name, 0), kib)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss": usage.ru_maxrss * 1024,
        "sampled_anon": peaks.get("RssAnon", 0) * 1024,
        "sampled_file": peaks.get("RssFile", 0) * 1024,
        "sampled_hwm": peaks.get("VmHWM", 0) * 1024,
    }


def convert_cmd(source: Path, to: str, output: Path) -> list[str]:
    cli = [sys.executable, "-m", "weight_convert", "convert"]
    return cli + [str(source), "--to", to, "-o", str(output), "--force"]


def ensure_flax_source(workdir: Path) -> None:
    """The ``pth-flax`` output as the source of ``flax-torch-pth``, converted once."""
    path = workdir / SOURCES["flax"]
    if path.is_file():
        return
    print("converting the .pth to Flax (source of flax-torch-pth) ...", file=sys.stderr)
    base = str(path)[: -len(".safetensors")]
    result = measure(convert_cmd(workdir / SOURCES["pth"], "flax", Path(base)), {}, workdir / "log")
    if result["returncode"] != 0:
        print((workdir / "log").read_text()[-3000:], file=sys.stderr)
        sys.exit("could not write the Flax source")


def run_case(name: str, workdir: Path) -> dict:
    source_kind, to, output, env = CASES[name]
    if source_kind == "flax":
        ensure_flax_source(workdir)
    source = workdir / SOURCES[source_kind]
    outdir = workdir / "out"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir()
    log = workdir / f"{name}.log"
    result = measure(convert_cmd(source, to, outdir / output), env, log)
    result["output_bytes"] = sum(p.stat().st_size for p in outdir.iterdir())
    flax_source = workdir / SOURCES["flax"]
    if name == "pth-flax" and result["returncode"] == 0 and not flax_source.exists():
        os.replace(outdir / "out.safetensors", flax_source)  # the source of flax-torch-pth
    shutil.rmtree(outdir)
    result["case"] = name
    result["source_bytes"] = source.stat().st_size
    result["ratio"] = result["peak_rss"] / result["source_bytes"]
    result["within_bound"] = result["ratio"] < BOUND
    if result["returncode"] != 0:
        result["log_tail"] = log.read_text(errors="replace")[-3000:]
    return result


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def print_cases(results: list[dict]) -> None:
    print(
        f"\n{VARIANT} conversion, peak RSS vs {BOUND} x source size "
        "(anon / file: sampled RssAnon / RssFile peaks; GB = 1e9 B)"
    )
    head = f"{'case':<24}{'seconds':>9}{'cpu s':>8}{'peak GB':>9}{'ratio':>7}"
    print(head + f"{'anon GB':>9}{'file GB':>9}  result")
    for r in results:
        if r["returncode"] != 0:
            verdict = f"FAILED (exit code {r['returncode']})"
        else:
            verdict = "ok" if r["within_bound"] else f"ABOVE {BOUND}x"
        print(
            f"{r['case']:<24}{r['seconds']:>9.1f}{r['cpu_seconds']:>8.1f}"
            f"{_gb(r['peak_rss']):>9}{r['ratio']:>7.2f}"
            f"{_gb(r['sampled_anon']):>9}{_gb(r['sampled_file']):>9}  {verdict}"
        )
    if results:
        print(f"source sizes: {', '.join(sorted({_gb(r['source_bytes']) for r in results}))} GB")


def print_imports(results: list[dict]) -> None:
    print("\nimport baselines (python -c ..., peak RSS)")
    for r in results:
        failed = "" if r["returncode"] == 0 else f"  FAILED (exit code {r['returncode']})"
        print(f"{r['case']:<32}{_gb(r['peak_rss']):>7} GB{r['seconds']:>7.1f} s{failed}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", choices=list(CASES), default=list(CASES), help="default: all"
    )
    parser.add_argument(
        "--workdir", type=Path, help="checkpoints and outputs (default: a new folder under /tmp)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated checkpoints (and the case logs) in --workdir for a later run",
    )
    parser.add_argument("--no-imports", action="store_true", help="skip the import baselines")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    return parser


def main() -> int:
    args = _parser().parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="convert_memory_"))
    workdir.mkdir(parents=True, exist_ok=True)
    created = [workdir / s for s in SOURCES.values()] + [workdir / "log", workdir / "out"]
    created += [workdir / (SOURCES[s] + ".partial") for s in ("pth", "safetensors")]
    created += [workdir / f"{name}.log" for name in CASES]
    imports: list[dict] = []
    results: list[dict] = []
    try:
        if not args.no_imports:
            for name, (code, env) in IMPORTS.items():
                imports.append(
                    {"case": name, **measure([sys.executable, "-c", code], env, workdir / "log")}
                )
            print_imports(imports)
        ensure_checkpoint(workdir)
        for name in args.cases:
            print(f"{name} ...", file=sys.stderr)
            results.append(run_case(name, workdir))
            r = results[-1]
            print(
                f"  {r['seconds']:.0f} s, peak {_gb(r['peak_rss'])} GB ({r['ratio']:.2f}x), "
                f"exit code {r['returncode']}",
                file=sys.stderr,
            )
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            for path in created:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            if args.workdir is None:
                workdir.rmdir()
    print_cases(results)
    for r in results:
        if "log_tail" in r:
            print(f"\n{r['case']} failed:\n{r['log_tail']}")
    if args.json:
        args.json.write_text(
            json.dumps({"bound": BOUND, "imports": imports, "cases": results}, indent=1)
        )
    return 1 if any(r["returncode"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

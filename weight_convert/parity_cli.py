"""``weight-convert parity``: every registered building block, every port (Keras on the
TensorFlow, JAX and torch backends, Flax), random weights, and a table of the maximum absolute
error per block and port. Each target runs in its own process (``parity_worker``)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from weight_convert.errors import UsageError
from weight_convert.tolerance import BLOCK_TOLERANCE

__all__ = ["PARITY_TARGETS", "add_parity_parser", "cmd_parity"]

#: target name -> (port framework, KERAS_BACKEND)
PARITY_TARGETS = {
    "keras-tensorflow": ("keras", "tensorflow"),
    "keras-jax": ("keras", "jax"),
    "keras-torch": ("keras", "torch"),
    "flax": ("flax", None),
}
BLOCK_ATOL = BLOCK_TOLERANCE.atol


def _run_target(target: str, blocks: list[str] | None) -> dict:
    framework, backend = PARITY_TARGETS[target]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "reports.json")
        cmd = [
            sys.executable,
            "-m",
            "weight_convert.parity_worker",
            "--port",
            framework,
            "--out",
            out,
        ]
        if blocks:
            cmd += ["--blocks", *blocks]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            return {"target": target, "error": tail or f"exit code {proc.returncode}"}
        with open(out) as f:
            result = json.load(f)
    result["target"] = target
    result["seconds"] = time.perf_counter() - start
    return result


def _table(results: list[dict], blocks: list[str]) -> tuple[str, bool]:
    targets = [r["target"] for r in results]
    width = max(len(b) for b in blocks) + 2
    lines = [f"{'block':<{width}}" + "".join(f"{t:>18}" for t in targets)]
    ok = True
    for block in blocks:
        row = f"{block:<{width}}"
        for r in results:
            if "error" in r:
                row += f"{'ERROR':>18}"
                ok = False
                continue
            cases = [c for c in r["reports"] if c["name"].startswith(block + "[")]
            worst = max(c["max_abs"] for c in cases)
            passed = all(c["passed"] for c in cases)
            ok &= passed
            row += f"{worst:>14.2e}" + ("    " if passed else " !! ")
        lines.append(row)
    return "\n".join(lines), ok


def cmd_parity(args: argparse.Namespace) -> int:
    import zoo

    blocks = args.blocks or list(zoo.BLOCKS)
    for b in blocks:
        if b not in zoo.BLOCKS:
            raise UsageError(f"unknown block {b!r}; known: {', '.join(zoo.BLOCKS)}")
    targets = args.targets or list(PARITY_TARGETS)
    for t in targets:
        if t not in PARITY_TARGETS:
            raise UsageError(f"unknown target {t!r}; known: {', '.join(PARITY_TARGETS)}")
    n_cases = sum(len(zoo.BLOCKS[b]) for b in blocks)
    print(
        f"parity: {len(blocks)} blocks, {n_cases} cases, targets {', '.join(targets)} "
        "(random weights, N(0,1) inputs, fp32)",
        file=sys.stderr,
    )
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {t: pool.submit(_run_target, t, args.blocks) for t in targets}
        results = []
        for t in targets:
            r = futures[t].result()
            status = r.get("error") and "ERROR" or f"{r['seconds']:.0f} s"
            print(f"  {t}: {status}", file=sys.stderr)
            results.append(r)

    table, ok = _table(results, blocks)
    if args.json:
        print(json.dumps({"passed": ok, "tolerance": BLOCK_ATOL, "results": results}))
        return 0 if ok else 1
    print(
        "max abs error per block (worst case), port vs PyTorch reference; "
        f"tolerance {BLOCK_ATOL:g}, '!!' marks a failure"
    )
    print(table)
    for r in results:
        if "error" in r:
            print(f"\n{r['target']} failed to run:\n{r['error']}")
            continue
        for c in r["reports"]:
            if not c["passed"] or args.layers:
                print(
                    f"\n{c['name']} on {r['target']}: first above tolerance: {c['first_failure']}"
                )
                for e in c["layers"] + c["outputs"]:
                    print(
                        f"  {e['path']:<40} max abs {e['max_abs']:.3e}  max rel {e['max_rel']:.3e}"
                    )
    settings = next((r["reports"][0]["settings"] for r in results if r.get("reports")), {})
    print(
        "\nnumerics: "
        + ", ".join(
            f"{k}={v}" for k, v in settings.items() if "precision" in k or k in ("dtype", "torch")
        )
    )
    print("result: " + ("all blocks within tolerance" if ok else "FAILURES above"))
    return 0 if ok else 1


def add_parity_parser(sub) -> None:
    """The ``parity`` subcommand of the ``weight-convert`` parser."""
    p = sub.add_parser("parity", help="parity table: every building block x every port")
    p.add_argument("--blocks", nargs="+", metavar="BLOCK", help="only these blocks")
    p.add_argument(
        "--targets",
        nargs="+",
        metavar="TARGET",
        help=f"only these ports (default: all of {', '.join(PARITY_TARGETS)})",
    )
    p.add_argument("--jobs", type=int, default=2, help="targets run in parallel (default 2)")
    p.add_argument("--layers", action="store_true", help="print every case's per-layer errors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_parity)

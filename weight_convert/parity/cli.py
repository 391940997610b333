"""``weight-convert parity``: every registered building block, every port (Keras on the
TensorFlow, JAX and torch backends, Flax), random weights, and a table of the maximum absolute
error per block and port: of the forward pass, or (``--gradients``) of the gradients with
respect to every parameter and input, in float32 or (``--float64``) float64. Each target runs
in its own process (``weight_convert.parity.worker``), ``--jobs`` at a time, the slowest
first. Imports no deep-learning framework itself."""

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
from weight_convert.tolerance import (
    BLOCK_GRAD_TOLERANCE,
    BLOCK_TOLERANCE,
    FLOAT64_GRAD_TOLERANCE,
    FLOAT64_TOLERANCE,
)

__all__ = ["PARITY_TARGETS", "add_parity_parser", "cmd_parity"]

#: target name -> (port framework, KERAS_BACKEND), in the order the table shows them
PARITY_TARGETS = {
    "keras-tensorflow": ("keras", "tensorflow"),
    "keras-jax": ("keras", "jax"),
    "keras-torch": ("keras", "torch"),
    "flax": ("flax", None),
}
#: the order targets start in: longest first, so that two jobs end close together
START_ORDER = ("keras-jax", "flax", "keras-torch", "keras-tensorflow")
#: Keras computes float64 on TensorFlow only (its type promotion demotes float64 results to
#: float32 on the other backends: ``test_keras_float64_limit``)
FLOAT64_TARGETS = ("keras-tensorflow", "flax")
#: (gradients, float64) -> what the table's errors are held to, in words
BOUNDS = {
    (False, False): f"max abs error <= {BLOCK_TOLERANCE.atol:g}",
    (True, False): (
        f"max abs error <= {BLOCK_GRAD_TOLERANCE.atol:g} + {BLOCK_GRAD_TOLERANCE.rmax:g} x "
        "max |reference gradient|"
    ),
    (False, True): f"max abs error <= {FLOAT64_TOLERANCE.rmax:g} x max |reference|",
    (True, True): (
        f"max abs error <= {FLOAT64_GRAD_TOLERANCE.rmax:g} x max |reference gradient| + "
        f"{FLOAT64_GRAD_TOLERANCE.rscale:g} x the block's largest gradient"
    ),
}


def _run_target(
    target: str, blocks: list[str] | None, gradients: bool = False, float64: bool = False
) -> dict:
    framework, backend = PARITY_TARGETS[target]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "reports.json")
        cmd = [sys.executable, "-m", "weight_convert.parity.worker", "--port", framework]
        cmd += ["--out", out, *(["--blocks", *blocks] if blocks else [])]
        cmd += [
            *(["--gradients"] if gradients else []),
            *(["--dtype", "float64"] if float64 else []),
        ]
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


def _table(results: list[dict], groups: list[str]) -> tuple[str, bool]:
    """One row per group (a report's ``group``: the block), the worst max abs error of its
    cases per target; whether every case passed."""
    width = max(len(g) for g in groups) + 2
    lines = [f"{'block':<{width}}" + "".join(f"{r['target']:>18}" for r in results)]
    ok = True
    for group in groups:
        row = f"{group:<{width}}"
        for r in results:
            if "error" in r:
                row += f"{'ERROR':>18}"
                ok = False
                continue
            cases = [c for c in r["reports"] if c["group"] == group]
            if not cases:
                row += f"{'-':>18}"
                ok = False
                continue
            passed = all(c["passed"] for c in cases)
            ok &= passed
            row += f"{max(c['max_abs'] for c in cases):>14.2e}" + ("    " if passed else " !! ")
        lines.append(row)
    return "\n".join(lines), ok


def _run_targets(
    targets: list[str], blocks: list[str] | None, jobs: int, gradients: bool, float64: bool
) -> list[dict]:
    """Every target's worker result, in ``targets`` order; started slowest first."""
    order = sorted(targets, key=lambda t: START_ORDER.index(t) if t in START_ORDER else -1)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {t: pool.submit(_run_target, t, blocks, gradients, float64) for t in order}
        results = []
        for t in targets:
            r = futures[t].result()
            status = r.get("error") and "ERROR" or f"{r['seconds']:.0f} s"
            print(f"  {t}: {status}", file=sys.stderr)
            results.append(r)
    return results


def _details(results: list[dict], every_case: bool) -> list[str]:
    """Per-layer errors of each failed case (of every case with ``every_case``)."""
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"\n{r['target']} failed to run:\n{r['error']}")
            continue
        for c in r["reports"]:
            if c["passed"] and not every_case:
                continue
            first = c["first_failure"]
            lines.append(f"\n{c['name']} on {r['target']}: first above tolerance: {first}")
            for e in c["layers"] + c["outputs"]:
                lines.append(
                    f"  {e['path']:<40} max abs {e['max_abs']:.3e}  max rel {e['max_rel']:.3e}"
                )
    return lines


def _checked(names: list[str] | None, known: list[str], kind: str) -> list[str]:
    for name in names or []:
        if name not in known:
            raise UsageError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
    return list(names or known)


def cmd_parity(args: argparse.Namespace) -> int:
    import zoo

    blocks = _checked(args.blocks, list(zoo.BLOCKS), "block")
    targets = _checked(args.targets, list(PARITY_TARGETS), "target")
    if args.float64:
        skipped = [t for t in targets if t not in FLOAT64_TARGETS]
        targets = [t for t in targets if t in FLOAT64_TARGETS]
        if not targets:
            raise UsageError(f"--float64 runs on {' and '.join(FLOAT64_TARGETS)} only")
        if skipped:
            print(
                f"parity: float64 skips {', '.join(skipped)} (Keras computes float64 on "
                "TensorFlow only)",
                file=sys.stderr,
            )
    n_cases = sum(len(zoo.BLOCKS[b]) for b in blocks)
    what = "gradients" if args.gradients else "forward"
    dtype = "float64" if args.float64 else "fp32"
    print(
        f"parity: {len(blocks)} blocks, {n_cases} cases, targets {', '.join(targets)} "
        f"(random weights, N(0,1) inputs, {what}, {dtype})",
        file=sys.stderr,
    )
    results = _run_targets(targets, args.blocks, args.jobs, args.gradients, args.float64)
    table, ok = _table(results, blocks)
    bound = BOUNDS[(args.gradients, args.float64)]
    if args.json:
        print(json.dumps({"passed": ok, "bound": bound, "results": results}))
        return 0 if ok else 1
    print(
        f"max abs error per block (worst case), port vs PyTorch reference, {what}, {dtype}; "
        f"each tensor held to {bound}; '!!' marks a failure"
    )
    print(table)
    for line in _details(results, args.layers):
        print(line)
    settings = next((r["reports"][0]["settings"] for r in results if r.get("reports")), {})
    shown = [f"{k}={v}" for k, v in settings.items() if "precision" in k or k in ("dtype", "torch")]
    print("\nnumerics: " + ", ".join(shown))
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
    p.add_argument(
        "--gradients",
        action="store_true",
        help="compare the gradients w.r.t. every parameter and input (the backward pass)",
    )
    p.add_argument(
        "--float64",
        action="store_true",
        help="reference, ports, weights and inputs in float64 (Keras on TensorFlow and Flax)",
    )
    p.set_defaults(func=cmd_parity)

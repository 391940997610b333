"""Runs the block parity cases for one port in this process (one Keras backend per process) and
writes the reports as JSON. Started by ``weight-convert parity`` (``weight_convert.parity.cli``);
not meant to be run by hand."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    from weight_convert.frameworks import PORTS

    parser = argparse.ArgumentParser(prog="python -m weight_convert.parity.worker")
    parser.add_argument("--port", required=True, choices=PORTS)
    parser.add_argument("--blocks", nargs="*", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--gradients", action="store_true")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    import zoo
    from weight_convert.frameworks import port
    from weight_convert.parity.runners import run_case

    adapter = port(args.port)
    imported = time.perf_counter() - start
    names = args.blocks or list(zoo.BLOCKS)
    dtype = None if args.dtype == "float32" else args.dtype
    reports = [
        run_case(case, adapter, gradients=args.gradients, dtype=dtype).to_json()
        for name in names
        for case in zoo.BLOCKS[name]
    ]
    result = {
        "target": adapter.NAME,
        "reports": reports,
        "import_seconds": imported,
        "run_seconds": time.perf_counter() - start - imported,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

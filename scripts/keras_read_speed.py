"""Speed of a Keras file as a conversion source (issue 14): ``weight-convert convert X.keras --to
flax`` against the same weights as a bare ``X.weights.h5``, for SAM ViT-B and ViT-H sized
checkpoints, printed as seconds and the ratio .keras / .weights.h5 measured in one run.

    python scripts/keras_read_speed.py                              # sam_vit_b and sam_vit_h
    python scripts/keras_read_speed.py --variants sam_vit_b --repeats 3
    python scripts/keras_read_speed.py --workdir /tmp/speed --keep  # keep the Keras files

For each variant a checkpoint in the official ``segment-anything`` layout (keys and shapes from
``zoo.configs.reference_shapes``, random N(0, 0.02) values in ``--dtype``) is streamed into
``--workdir`` as a ``.safetensors`` (one tensor in memory at a time), converted once with
``--to keras`` (``VARIANT.keras`` and ``VARIANT.weights.h5``, the same weights) and deleted.
Then each repeat converts both Keras files to Flax, one after the other, each in a fresh process
(``convert_memory.measure``: wall and CPU seconds, peak RSS), the output deleted after each run.
``loaded`` is the converter's own time to read the source (``--json``: imports included);
``cpu`` counts the child's user + system seconds, steadier than wall time on a shared machine.
Seconds are medians over ``--repeats``; ``ratio`` is the ratio of the medians, ``best`` that of
the fastest runs (the least disturbed ones on a shared machine). Disk: three files of the
checkpoint's size at most (float32 ViT-H: 3 x 2.6 GB; ``--dtype float16`` halves it); the
workdir is removed at the end unless ``--keep``.

Exit code 0; 1 when a conversion fails (the tail of its log is printed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from convert_memory import convert_cmd, measure  # noqa: E402  (scripts/ is on sys.path)

VARIANTS = ("sam_vit_b", "sam_vit_h")
SOURCES = ("weights.h5", "keras")
#: what each run measures -> its label in the table
MEASURES = {"seconds": "wall s", "cpu_seconds": "cpu s", "loaded": "loaded s"}


def write_checkpoint(path: Path, variant: str, dtype: str) -> None:
    """A random official-layout ``variant`` checkpoint as a safetensors file, streamed."""
    import numpy as np

    from weight_convert.safetensors_io import StreamWriter
    from zoo.configs import VARIANTS as ZOO_VARIANTS
    from zoo.configs import reference_shapes

    shapes = reference_shapes(ZOO_VARIANTS[variant].config)
    rng = np.random.default_rng(0)
    writer = StreamWriter(path, [(k, s, np.dtype(dtype)) for k, s in shapes.items()])
    try:
        for key, shape in shapes.items():
            value = rng.standard_normal(shape, dtype=np.float32)
            value *= 0.02
            writer.add(key, value.astype(dtype, copy=False))
    finally:
        writer.close()


def _run(cmd: list[str], log: Path) -> dict:
    result = measure(cmd + ["--json"], {}, log)
    text = log.read_text(errors="replace")
    if result["returncode"] != 0:
        sys.exit(f"failed ({result['returncode']}): {' '.join(cmd)}\n{text[-3000:]}")
    summary = json.loads(next(line for line in text.splitlines() if line.startswith("{")))
    return {**result, "loaded": summary["seconds"]["loaded"]}


def prepare(workdir: Path, variant: str, dtype: str) -> dict[str, Path]:
    """``VARIANT.keras`` and ``VARIANT.weights.h5`` in ``workdir``, made once."""
    files = {s: workdir / f"{variant}.{s}" for s in SOURCES}
    if all(p.is_file() for p in files.values()):
        return files
    checkpoint = workdir / f"{variant}.safetensors"
    start = time.perf_counter()
    print(f"writing {variant} ({dtype}) ...", file=sys.stderr)
    write_checkpoint(checkpoint, variant, dtype)
    _run(convert_cmd(checkpoint, "keras", workdir / variant) + ["--force"], workdir / "log")
    checkpoint.unlink()
    print(f"  done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return files


def bench(workdir: Path, variant: str, dtype: str, repeats: int) -> dict:
    files = prepare(workdir, variant, dtype)
    runs: dict[str, list[dict]] = {s: [] for s in SOURCES}
    for i in range(repeats):
        for source in SOURCES if i % 2 == 0 else SOURCES[::-1]:  # alternate who goes first
            out = workdir / "out"
            result = _run(convert_cmd(files[source], "flax", out), workdir / "log")
            (workdir / "out.safetensors").unlink()
            runs[source].append(result)
            print(
                f"  {variant} {source}: {result['seconds']:.1f} s wall, "
                f"{result['cpu_seconds']:.1f} s cpu, loaded {result['loaded']:.1f} s",
                file=sys.stderr,
            )
    row: dict = {"variant": variant, "dtype": dtype, "repeats": repeats}
    for source in SOURCES:
        row[f"{source} MB"] = files[source].stat().st_size / 1e6
        for what in MEASURES:
            row[f"{source} {what}"] = statistics.median(r[what] for r in runs[source])
            row[f"{source} {what} best"] = min(r[what] for r in runs[source])
    for what in MEASURES:
        for tail in ("", " best"):
            row[f"ratio {what}{tail}"] = (
                row[f"keras {what}{tail}"] / row[f"weights.h5 {what}{tail}"]
            )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the workdir's Keras files")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="keras_read_speed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for variant in args.variants:
            rows.append(bench(workdir, variant, args.dtype, args.repeats))
            if not args.keep:
                for source in SOURCES:
                    (workdir / f"{variant}.{source}").unlink(missing_ok=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"{'variant':<10} {'MB':>6} {'':>9} {'.weights.h5':>11} {'.keras':>8} {'ratio':>6} "
        f"{'best':>6}"
    )
    for row in rows:
        for what, label in MEASURES.items():
            first = what == "seconds"
            name, mb = (row["variant"], f"{row['keras MB']:.0f}") if first else ("", "")
            print(
                f"{name:<10} {mb:>6} {label:>9} {row[f'weights.h5 {what}']:>11.1f} "
                f"{row[f'keras {what}']:>8.1f} {row[f'ratio {what}']:>6.3f} "
                f"{row[f'ratio {what} best']:>6.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

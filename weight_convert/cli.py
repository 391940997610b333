"""``weight-convert`` command line (also ``python -m weight_convert``).

- ``parity``: the main job. Every registered building block, every port (Keras on the TensorFlow,
  JAX and torch backends, Flax), random weights, and a table of the maximum absolute error per
  block and port.
- ``convert SOURCE --to keras|flax|torch``: in every direction between PyTorch checkpoints (the
  layouts ``weight_convert.layouts`` registers), a Keras ``.keras`` + ``.weights.h5`` and a Flax
  ``.safetensors``; ``--to torch --layout NAME`` picks the PyTorch layout written. ``--verify``
  loads the written file and compares it with the source layer by layer.
- ``inspect CHECKPOINT``: layout, family, variant, parameter count, dtypes.
- ``list``: the registered models and variants.

Exit codes: ``weight_convert.errors.EXIT_CODES`` (one per kind of bad input; ``--help`` lists
them). Every expected failure prints one line, ``weight-convert: error: ...`` (``errors.one_line``:
capped, control characters escaped), and leaves no output file behind; so do Ctrl-C
(``weight-convert: interrupted (SIGINT)``, exit 130) and SIGTERM (``terminated``, exit 143), for
every command, wherever the signal lands (``weight_convert.signals``). A signal after the outputs
were published (during ``--verify`` or the summary) keeps them: they are complete, and the line
names them. Nothing else reaches stderr: the frameworks' own logs and warnings are set aside
(``weight_convert.quiet``), or printed as ``weight-convert: note: ...`` lines with ``--verbose``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from weight_convert import quiet, signals
from weight_convert.errors import EXIT_CODES, ConvertError, Interrupted, UsageError, one_line
from weight_convert.parity.cli import add_parity_parser

EXIT_VERIFY = 1  # the written file differs from its source beyond tolerance (EXIT_CODES[1])
EXIT_USAGE = UsageError.exit_code


def _shape(text: str) -> tuple[int, ...]:
    """Sizes separated by ``x`` (or commas), each a positive integer: ``1x3x224x224``. Whether
    the rank fits the model is the family's to say (``convert`` checks it)."""
    try:
        shape = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (use e.g. 1x3x224x224)") from None
    if min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be a positive integer")
    return shape


def _print_detected(detected: dict) -> None:
    print(f"source:   {detected['source']}")
    if detected["layout"] is not None:
        print(f"layout:   {detected['layout']}")
    print(f"family:   {detected['family']}")
    print(f"variant:  {detected['variant'] or '(custom architecture)'}")
    for note in detected["notes"]:
        print(f"note:     {note}")


def _print_summary(summary, report) -> None:
    _print_detected(summary.detected)
    layout = f" ({summary.layout} layout)" if summary.layout else ""
    print(f"target:   {summary.target}{layout}")
    for path in summary.outputs:
        print(f"wrote     {path}")
    print("seconds:  " + ", ".join(f"{k} {v:.1f}" for k, v in summary.seconds.items()))
    if report is not None:
        print(report.table())


def cmd_convert(args: argparse.Namespace) -> int:
    from weight_convert.convert import convert
    from weight_convert.progress import Progress

    if args.variant is not None:
        from zoo.configs import VARIANTS

        if args.variant not in VARIANTS:
            raise UsageError(f"unknown variant {args.variant!r}; see `weight-convert list`")
    progress = Progress(enabled=args.progress)
    summary, report = convert(
        args.checkpoint,
        args.to,
        args.output,
        layout=args.layout,
        variant=args.variant,
        verify=args.verify,
        verify_shape=args.verify_shape,
        force=args.force,
        dtype=args.dtype,
        allow_missing=args.allow_missing,
        allow_unused=args.allow_unused,
        allow_nonfinite=args.allow_nonfinite,
        progress=progress,
    )
    if args.json:
        from weight_convert.convert import asdict

        print(json.dumps(asdict(summary)))
    else:
        _print_summary(summary, report)
    if report is not None and not report.passed:
        first = report.first_failure
        _say(f"verification failed: {first.label} max abs {first.max_abs:.3e} > {first.bound:.1e}")
        return EXIT_VERIFY
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from weight_convert import sources

    description = sources.describe(args.checkpoint)  # any file convert reads, read as it does
    if args.json:
        print(json.dumps(description, default=str))
        return 0
    width = max(len(k) for k in description)
    for key, value in description.items():
        if key == "variant" and value is None:
            value = "none: a custom architecture (nearest_variant with overrides builds it)"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from zoo.configs import VARIANTS, parameter_count

    rows = [
        {
            "name": name,
            "family": v.config.family,
            "model": v.model,
            "parameters": parameter_count(v.config),
            "description": v.description,
        }
        for name, v in VARIANTS.items()
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("name", "family", "model")}
    w = [widths["name"], widths["family"], widths["model"]]
    print(f"{'variant':<{w[0]}} {'family':<{w[1]}} {'model':<{w[2]}} {'params':>8}  description")
    for r in rows:
        print(
            f"{r['name']:<{w[0]}} {r['family']:<{w[1]}} {r['model']:<{w[2]}} "
            f"{r['parameters'] / 1e6:7.1f}M  {r['description']}"
        )
    return 0


def _add_convert_parser(sub) -> argparse.ArgumentParser:
    """``convert``: what is read and what is written."""
    from weight_convert.layouts import layout_names

    p = sub.add_parser(
        "convert",
        help="convert between PyTorch checkpoints, Keras and Flax, in every direction",
        description="SOURCE is a PyTorch checkpoint (layout and variant detected from its keys "
        f"and shapes; layouts: {', '.join(layout_names())}), a Keras .keras or "
        ".weights.h5 file, a Hugging Face model directory (config.json and its weights, shards "
        "too), or a Flax .safetensors file written by this tool (told apart from a "
        "PyTorch .safetensors by its metadata) or .msgpack. Keras: writes OUT.keras (full model) "
        "and OUT.weights.h5, on the backend KERAS_BACKEND selects (default tensorflow). Flax: "
        "writes OUT.safetensors (the nnx state, config in the metadata) or, when -o ends so, "
        "OUT.msgpack. torch: writes a checkpoint in --layout's keys: OUT.pth (torch.save), or "
        "OUT.safetensors / OUT.pkl (a pickle of NumPy arrays, as detectron2's model zoo ships "
        "them) when -o ends so; --layout huggingface writes the directory OUT (model.safetensors "
        "and config.json, as save_pretrained does). dtypes are kept unless --dtype; "
        "every output but .pkl is written one tensor at a time. Files are written in a staging "
        "folder beside the outputs (.weight-convert-PID-XXXXXXXX.partial) and published at the "
        "end, all or none, never over a file that appeared meanwhile unless --force; each run "
        "first removes the staging folders that killed runs (kill -9) left there.",
    )
    p.add_argument(
        "checkpoint",
        metavar="SOURCE",
        help=".pth / .pt / .bin / .safetensors / .pkl checkpoint (a .pt may be a TorchScript "
        "archive: its module's state dict is read, nothing of it run), Keras .keras / "
        ".weights.h5, Flax .safetensors / .msgpack",
    )
    p.add_argument(
        "--to", required=True, choices=["keras", "flax", "torch"], help="target framework"
    )
    p.add_argument(
        "--layout",
        help="--to torch: the PyTorch layout written (default: the family's own: official "
        "where it has one, else its only layout)",
    )
    p.add_argument(
        "-o",
        "--output",
        help="output path without suffix (default: ./SOURCE-STEM_TARGET); --to torch: a path "
        "ending in .pth / .pt / .bin / .safetensors / .pkl is taken as it is",
    )
    p.add_argument(
        "--variant",
        help="refuse the checkpoint unless it is this variant (and: the model of a bare "
        ".weights.h5 that does not name one)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace existing output files (files or links: never a directory or a device)",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        help="cast the floating tensors (default: each keeps the source's dtype)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    _add_verbose(p)
    p.set_defaults(func=cmd_convert)
    return p


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show what the frameworks print on their own (TensorFlow's C++ logs, Python "
        "warnings, log records) as 'weight-convert: note: ...' lines on stderr; by default "
        "they are dropped and stderr holds the progress bar and the error line only",
    )


def _add_check_arguments(p: argparse.ArgumentParser) -> None:
    """``convert``'s verification and the deliberate exceptions to its checks."""
    p.add_argument(
        "--verify",
        action="store_true",
        help="load the written file and compare it with the source, layer by layer (Keras / "
        "Flax outputs against the PyTorch reference holding the source's weights; a PyTorch "
        "output read back into the reference against the Keras / Flax source, or tensor by "
        "tensor against a PyTorch source); exit 1 above tolerance (1e-4 x output std)",
    )
    p.add_argument(
        "--verify-shape",
        type=_shape,
        metavar="SHAPE",
        help="the model's first reference input for --verify, sizes joined by x, e.g. "
        "1x3x224x224 for an image or 1x3x16x224x224 for a clip (default: the family's input "
        "at the variant's resolution); its rank must be the model's",
    )
    p.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="PATTERN",
        help="tensors the source may lack (fnmatch pattern on the checkpoint's or the "
        "reference's key; repeatable): left at initialization in Keras / Flax, left out of a "
        "PyTorch output",
    )
    p.add_argument(
        "--allow-unused",
        action="append",
        default=[],
        metavar="PATTERN",
        help="extra tensors in the source to drop (fnmatch pattern; repeatable)",
    )
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="convert weights holding NaN or Inf, or that --dtype overflows to Inf (refused by "
        "default)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weight-convert",
        description="Convert vision-transformer weights between PyTorch, Keras 3 and Flax NNX, "
        "and prove the ports give the same numbers.",
        epilog="exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_parity_parser(sub)
    _add_check_arguments(_add_convert_parser(sub))

    p = sub.add_parser("inspect", help="layout, family, variant, parameter count and dtypes")
    p.add_argument("checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_verbose(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("list", help="registered models and variants")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)
    return parser


def _exit_code(error: BaseException) -> int | None:
    """Exit code for an expected failure, None for a bug (which keeps its traceback)."""
    if isinstance(error, ConvertError):
        return error.exit_code
    return None


def _say(message: object) -> None:
    """One line on stderr: ``weight-convert: MESSAGE`` (``errors.one_line``)."""
    print(f"weight-convert: {one_line(message)}", file=sys.stderr)


def _run(argv: list[str] | None) -> int:
    """Parse and run the command; an expected failure is one line and its exit code."""
    try:
        args = build_parser().parse_args(argv)
        with quiet.run(verbose=getattr(args, "verbose", False)):
            code = args.func(args)
        signals.check()  # a signal whose exception was swallowed on its way (a gc callback)
        return code
    except KeyboardInterrupt:  # SIGINT before its handler was set, or raised by code
        signals.record(signal.SIGINT)
        raise signals.interrupted() from None
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        return 0
    except Exception as e:
        signals.check()  # the signal came first: code it landed in may have made this error
        code = _exit_code(e)
        if code is None:
            raise
        _say(f"error: {e}")
        return code


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code. SIGINT and SIGTERM stop the run in one line
    (130 / 143) while it runs (``signals.raising``)."""
    with signals.raising():
        try:
            return _run(argv)
        except Interrupted as e:  # the handler records it: a second signal raises nothing here
            e = signals.interrupted() if signals.received() else e  # names outputs published since
            _say(e)
            return e.exit_code


if __name__ == "__main__":
    signals.exit_after_run(main())

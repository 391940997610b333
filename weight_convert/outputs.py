"""The files a conversion writes: their names (``output_paths``), whether they can be written
(``check_writable``, before anything is read) and atomic writing (``atomic``: staged under a
temporary name beside the outputs, renamed at the end, nothing left behind on failure)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from weight_convert.errors import OutputExistsError, OutputNotWritableError, first_line

__all__ = ["OUTPUT_SUFFIXES", "TORCH_SUFFIXES", "atomic", "check_writable", "output_paths"]

#: target framework -> files written, by suffix (torch: the default; see ``TORCH_SUFFIXES``)
OUTPUT_SUFFIXES = {
    "keras": (".keras", ".weights.h5"),
    "flax": (".safetensors",),
    "torch": (".pth",),
}
#: PyTorch checkpoint files ``--to torch`` writes, by the suffix of ``-o``: ``torch.save``'s zip
#: for .pth / .pt / .bin, safetensors for .safetensors, a pickle of NumPy arrays as model zoos
#: ship them for .pkl (layouts whose releases are such pickles only)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pkl")


def _strip(name: str, suffixes: Sequence[str]) -> str:
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_paths(source: str | Path, target: str, output: str | Path | None) -> list[Path]:
    """Files for ``target``. Keras / Flax: ``output`` with its known suffix removed, or the
    source's stem in the current directory (``STEM_keras``), plus each of the target's suffixes.
    torch: ``output`` as it is when it ends in one of ``TORCH_SUFFIXES``, else ``output`` (default
    ``./STEM_torch``) plus ``.pth``. flax: ``output`` as it is when it ends in ``.msgpack``."""
    if output is None:
        stem = _strip(Path(source).name, (*TORCH_SUFFIXES, ".keras", ".weights.h5", ".msgpack"))
        base = Path.cwd() / f"{stem}_{target}"
    else:
        base = Path(output)
        if target == "torch" and base.name.endswith(TORCH_SUFFIXES):
            return [base]
        if target == "flax" and base.name.endswith(".msgpack"):
            return [base]
        if target != "torch":
            base = base.with_name(_strip(base.name, OUTPUT_SUFFIXES[target]))
    return [base.with_name(base.name + suffix) for suffix in OUTPUT_SUFFIXES[target]]


def check_writable(paths: Sequence[Path]) -> None:
    """Raise ``OutputNotWritableError`` unless the outputs' directory exists and can be written
    or can be created (checked before anything is read)."""
    directory = Path(paths[0]).parent.absolute()
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputNotWritableError(f"cannot write {paths[0]}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"cannot write {paths[0]}: {probe} is not writable")


def atomic(paths: list[Path], write: Callable[[list[Path]], None]) -> None:
    """``write`` the files into a temporary directory beside the outputs, then rename each over
    its output: no half-written file under an output's name, and nothing left when ``write``
    fails. An ``OSError`` on the way is an ``OutputNotWritableError``."""
    directory = paths[0].parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".weight-convert-", dir=directory))
    except OSError as e:
        raise OutputNotWritableError(f"cannot write into {directory}: {e.strerror}") from None
    try:
        staged = [tmp / p.name for p in paths]
        try:
            write(staged)
            for src, dst in zip(staged, paths, strict=True):
                os.replace(src, dst)
        except OSError as e:
            if isinstance(e, (OutputExistsError, OutputNotWritableError)):
                raise
            raise OutputNotWritableError(
                f"cannot write {paths[0]}: {e.strerror or first_line(e)}"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

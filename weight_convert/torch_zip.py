"""``torch.save`` checkpoints written one tensor at a time.

``torch.save`` writes the file from fake tensors (shapes and dtypes, no data) under
``torch.serialization.skip_data`` (``zoo.compat.torch_save_skeleton``), which leaves each
storage's bytes as reserved space in its ``data/<n>`` zip record (stored uncompressed, so a
record's bytes lie at one offset). Each tensor's bytes are then loaded, checked and written into
its record, and the record's CRC-32 set in the zip's local and central headers: the result is a
sound zip that ``torch.load`` reads as any other.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weight_convert.errors import UsageError
from weight_convert.progress import Progress
from weight_convert.tensors import release, torch_dtype
from zoo import compat

if TYPE_CHECKING:
    from weight_convert.writers import Tensors

__all__ = ["write_pth"]


def _zip_records(path: Path) -> dict[int, tuple[int, int, int, int]]:
    """Storage key -> (offset of its data, size, offset of its local header, offset of its
    central directory entry) of the ``data/<key>`` records of a ``torch.save`` zip."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        central = zf.start_dir
    records = {}
    with open(path, "rb") as f:
        for info in infos:
            f.seek(central)
            entry = f.read(46)  # central directory entry: name / extra / comment lengths at 28
            lengths = [int.from_bytes(entry[i : i + 2], "little") for i in (28, 30, 32)]
            here, central = central, central + 46 + sum(lengths)
            head, _, key = info.filename.rpartition("/")
            if not head.endswith("/data") or not key.isdigit():
                continue
            f.seek(info.header_offset)
            local = f.read(30)  # local header: name and extra field lengths at 26, 28
            names = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
            data = info.header_offset + 30 + names
            records[int(key)] = (data, info.file_size, info.header_offset, here)
    return records


def write_pth(
    out: Path,
    items: list[tuple[str, str, Any]],
    tensors: Tensors,
    wrapper: str | None,
    progress: Progress,
) -> None:
    """Write ``(name, key, value)`` items as ``torch.save``'s zip of ``{name: tensor}`` (nested
    under ``wrapper`` when given), one tensor in memory at a time (``torch.save`` numbers the
    storages in pickling order, so item i's bytes go to record i). Not atomic: write to a
    staging path (``outputs.atomic``)."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise UsageError(f"writing {out.name} needs PyTorch ({e}); write .safetensors") from None
    from weight_convert.tensors import as_torch_tensor

    by_name = {name: (key, value) for name, key, value in items}
    skeleton = compat.torch_save_skeleton(
        out,
        {name: (value.shape, torch_dtype(tensors.out_dtype(value))) for name, _, value in items},
        wrapper,
        lambda name: as_torch_tensor(np.ascontiguousarray(tensors(*by_name[name]))),
    )
    if not skeleton:  # the fallback wrote the whole file
        tensors.check()
        return
    records = _zip_records(out)
    sizes = [
        (records.get(i, (0, -1))[1], int(np.prod(v.shape)) * tensors.out_dtype(v).itemsize)
        for i, (_, _, v) in enumerate(items)
    ]
    if len(records) != len(items) or any(a != b for a, b in sizes):
        raise RuntimeError(f"{out.name}: torch.save laid out the storages unexpectedly")
    with open(out, "r+b") as f:
        for i, (_, key, value) in enumerate(progress.track(items, "write")):
            data, _, local, central = records[i]
            raw = memoryview(np.ascontiguousarray(tensors(key, value)).reshape(-1).view(np.uint8))
            f.seek(data)
            f.write(raw)
            crc = zlib.crc32(raw).to_bytes(4, "little")  # the zip's CRC-32 of the real bytes
            for header, at in ((local, 14), (central, 16)):
                f.seek(header + at)
                f.write(crc)
            release(value)
    tensors.check()

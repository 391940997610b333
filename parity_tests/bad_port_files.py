"""How each hostile port file of test_bad_port_files.py is made from good ones (``good``: the tiny
official Swin ``.pth`` converted to ``k.keras`` / ``k.weights.h5``, ``f.safetensors`` and
``m.msgpack``), each in the directory ``d``: a config edited where the file keeps it, an HDF5
dataset replaced, a zip member swapped or deflated from zeros, a msgpack tree edited."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cli_checks
import h5py
import numpy as np

from weight_convert.keras_files import CONFIG_ATTR

__all__ = [
    "HEAD",
    "archive_with",
    "deep_json",
    "deflated_zeros",
    "flax_with_config",
    "h5_edited",
    "hard_twice",
    "huge_gzip_head",
    "keras_with_config",
    "msgpack_dotted",
    "msgpack_edited",
    "msgpack_rank1",
    "msgpack_twice",
    "peak_rss_mb",
    "replace_dataset",
    "soft_loop",
    "weights_with_config",
]

HEAD = "/head/vars/0"  # the classifier's kernel (64, 10) in k.weights.h5

Edit = Callable[[dict[str, Any]], None]


def _edited(config: dict[str, Any], edit: Edit | dict[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(config))
    if callable(edit):
        edit(config)
    else:
        config.update(edit)
    return config


def archive_with(source: Path, out: Path, members: dict[str, bytes | None]) -> Path:
    """The ``.keras`` zip ``source`` with members replaced (bytes), dropped (None) or added."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w") as zout:
        for name in zin.namelist():
            if name not in members:
                zout.writestr(name, zin.read(name))
        for name, data in members.items():
            if data is not None:
                zout.writestr(name, data)
    return out


def keras_with_config(
    good: dict, d: Path, edit: Edit | dict[str, Any], *, raw: Callable[[dict], None] | None = None
) -> Path:
    """``k.keras`` whose ``config.json`` holds the zoo config edited (``raw`` edits the whole
    ``config.json`` instead)."""
    with zipfile.ZipFile(good["keras"]) as z:
        data = json.loads(z.read("config.json"))
    if raw is not None:
        raw(data)
    else:
        data["config"]["config"] = _edited(data["config"]["config"], edit)
    return archive_with(
        good["keras"], d / "edited.keras", {"config.json": json.dumps(data).encode()}
    )


def weights_with_config(good: dict, d: Path, edit: Edit | dict[str, Any]) -> Path:
    """``k.weights.h5`` whose ``vit_zoo_config`` attribute holds the config edited."""
    out = shutil.copy(good["weights"], d / "edited.weights.h5")
    with h5py.File(out, "a") as f:
        f.attrs[CONFIG_ATTR] = json.dumps(_edited(json.loads(f.attrs[CONFIG_ATTR]), edit))
    return Path(out)


def flax_with_config(good: dict, d: Path, edit: Edit | dict[str, Any]) -> Path:
    """``f.safetensors`` whose metadata ``config`` is edited: the header rewritten, the data
    (whose offsets count from the header's end) kept."""
    data = good["flax"].read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    config = _edited(json.loads(header["__metadata__"]["config"]), edit)
    header["__metadata__"]["config"] = json.dumps(config)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out = d / "edited.safetensors"
    out.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])
    return out


def h5_edited(good: dict, d: Path, edit: Callable[[h5py.File], None], keras: bool = False) -> Path:
    """``k.weights.h5`` edited in place by ``edit(file)``; with ``keras``, then put into
    ``k.keras`` as its ``model.weights.h5``."""
    h5 = Path(shutil.copy(good["weights"], d / "edited.weights.h5"))
    with h5py.File(h5, "a") as f:
        edit(f)
    if not keras:
        return h5
    return archive_with(good["keras"], d / "edited.keras", {"model.weights.h5": h5.read_bytes()})


def replace_dataset(name: str, make: Callable[[np.ndarray], dict[str, Any]]):
    """An ``h5_edited`` edit: dataset ``name`` recreated with ``create_dataset(**make(old))``."""

    def edit(f: h5py.File) -> None:
        old = f[name][()]
        del f[name]
        f.create_dataset(name, **make(old))

    return edit


def deflated_zeros(good: dict, d: Path, member: str, mib: int) -> Path:
    """``k.keras`` whose ``member`` is its own bytes followed by ``mib`` MiB of zeros, deflated
    (about 4.5 MiB per GiB on disk, made at deflate level 1): HDF5 ignores what follows its
    data, so the weights member still opens; a reader that trusts it holds it all."""
    out = d / "bomb.keras"
    chunk = bytes(16 << 20)
    with zipfile.ZipFile(good["keras"]) as zin, zipfile.ZipFile(out, "w") as zout:
        for name in zin.namelist():
            if name != member:
                zout.writestr(name, zin.read(name))
        info = zipfile.ZipInfo(member)
        info.compress_type = zipfile.ZIP_DEFLATED
        info._compresslevel = 1  # noqa: SLF001 - Python 3.11's only spelling; fast to write
        with zout.open(info, "w", force_zip64=True) as f:
            f.write(zin.read(member))
            for _ in range(mib // 16):
                f.write(chunk)
    return out


def _pack(node: dict) -> bytes:
    """msgpack of a nested dict with any keys (mixed int and str too, which
    ``msgpack_serialize`` cannot sort), leaves as Flax encodes arrays."""
    import msgpack
    from flax import serialization

    out = [msgpack.Packer().pack_map_header(len(node))]
    for key, value in node.items():
        out.append(msgpack.packb(key))
        out.append(
            _pack(value) if isinstance(value, dict) else serialization.msgpack_serialize(value)
        )
    return b"".join(out)


def msgpack_edited(good: dict, d: Path, edit: Callable[[dict], dict]) -> Path:
    """``m.msgpack`` whose nested tree is replaced by ``edit(tree)``."""
    from flax import serialization

    tree = serialization.msgpack_restore(good["msgpack"].read_bytes())
    out = d / "edited.msgpack"
    out.write_bytes(_pack(edit(tree)))
    return out


def deep_json(good, d):
    """config.json nested 30000 deep: under the length bound, past Python's recursion limit."""
    path = keras_with_config(good, d, {"embed_dim": "DEEP"})
    text = archive_member(path, "config.json").replace(b'"DEEP"', b"[" * 30000 + b"]" * 30000)
    return archive_with(good["keras"], d / "deep.keras", {"config.json": text})


def archive_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(name)


def soft_loop(f: h5py.File) -> None:
    f["layers/loop"] = h5py.SoftLink("/layers/loop")


def hard_twice(f: h5py.File) -> None:
    f["head/again"] = f["head/vars"]


def msgpack_twice(tree: dict) -> dict:
    tree["layers"]["0"] = tree["layers"][0]  # list index as int and as string: one path
    return tree


def msgpack_dotted(tree: dict) -> dict:
    tree["head.kernel"] = tree["head"]["kernel"]  # next to head: {kernel: ...}
    return tree


def msgpack_rank1(tree: dict) -> dict:
    tree["head"]["kernel"] = tree["head"]["kernel"].reshape(-1)
    return tree


# --------------------------------------------------------------------------- memory


def peak_rss_mb(source: Path, cwd: Path) -> tuple[int, str, float]:
    """Exit code, stderr and peak resident memory (MB) of converting ``source`` to PyTorch in
    a child on the JAX backend (lighter than TensorFlow)."""
    args = ["convert", str(source), "--to", "torch", "-o", "o.pth"]
    return cli_checks.peak_rss_mb(args, cwd, {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"})


def huge_gzip_head(good, d):
    """A head kernel declared (64, 10^6) float64 (512 MB), gzip-compressed, nothing written,
    in a file whose config claims that head."""
    path = weights_with_config(good, d, {"num_classes": 1_000_000})
    with h5py.File(path, "a") as f:
        del f[HEAD]
        f.create_dataset(HEAD, shape=(64, 1_000_000), dtype="f8", compression="gzip")
    return path

"""TorchScript archives (``torch.jit.save``, as OpenAI's CLIP ``.pt`` files are) read without
PyTorch and without running them: the reader's state dict is ``torch.jit.load(f).state_dict()``
bit for bit (keys, order, dtypes, values) for scripted and traced modules; ``inspect``,
``convert`` and ``create_model(checkpoint=...)`` take them; hostile archives give one line, their
exit code and no output."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import one_line
from torch import nn

from weight_convert import checkpoints, cli, errors, torchscript


class Sub(nn.Module):
    """A buffer registered before a parameter (the state dict lists parameters first), a
    non-persistent buffer (TorchScript keeps no persistence: it is in the state dict), a buffer
    viewing another's storage, a plain tensor attribute and a float (in neither)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pb", torch.randn(6))
        self.register_buffer("view", self.pb[2:5])
        self.register_buffer("nb", torch.randn(2), persistent=False)
        self.scale = nn.Parameter(torch.randn(3))
        self.lin = nn.Linear(3, 4)
        self.plain = torch.randn(5)
        self.factor = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x * self.scale) + self.plain.sum() * self.factor
        return y + self.pb.sum() + self.nb.sum() + self.view.sum()


class Tree(nn.Module):
    """Nested submodules, Sequential and ModuleList indices, BatchNorm (num_batches_tracked), a
    Linear shared by two submodules, a Conv2d without bias (a None parameter), a bfloat16 and a
    frozen parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.a = Sub()
        self.seq = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Linear(4, 3), nn.Sequential(nn.Linear(3, 3))])
        self.b = Sub()
        self.b.lin = self.a.lin
        self.frozen = nn.Parameter(torch.randn(2, 3), requires_grad=False)
        self.register_buffer("bf16", torch.randn(3).to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.seq(x).mean((2, 3))
        for block in self.blocks:
            y = block(y)
        return self.a(y) + self.b(y) + self.frozen.sum() + self.bf16.float().sum()


def _tree() -> Tree:
    model = Tree()
    with torch.no_grad():  # BatchNorm's statistics and counter away from their initial values
        model.train()(torch.randn(2, 3, 6, 6))
    return model.eval()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """The small tree scripted and traced, fp32 and (``.half()``) fp16, and the tiny MNIST
    ConvNet traced (a family ``inspect`` knows)."""
    from zoo.models.convnet import ConvNet
    from zoo.registry import FAMILIES

    root = tmp_path_factory.mktemp("ts")
    model, x = _tree(), torch.randn(1, 3, 6, 6)
    made = {
        "scripted": torch.jit.script(model),
        "traced": torch.jit.trace(model, x),
        "traced_fp16": torch.jit.trace(_tree().half(), x.half()),
    }
    config = FAMILIES["convnet"].tiny
    net = ConvNet(config).eval()
    size = (1, config.in_chans, config.img_size, config.img_size)
    made["convnet"] = torch.jit.trace(net, torch.randn(size))
    made["convnet_fp16"] = torch.jit.trace(ConvNet(config).half().eval(), torch.randn(size).half())
    out = {}
    for name, module in made.items():
        module.save(root / f"{name}.pt")
        out[name] = root / f"{name}.pt"
    return out


def _bits(array) -> bytes:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).tobytes()


def _expected(path: Path) -> dict[str, torch.Tensor]:
    return torch.jit.load(path).state_dict()


@pytest.mark.parametrize("name", ["scripted", "traced", "traced_fp16", "convnet_fp16"])
def test_state_dict_is_torch_jit_loads(archives, name):
    """Keys in order, shapes, dtypes and every bit equal ``torch.jit.load(f).state_dict()``."""
    expected = _expected(archives[name])
    got, info = checkpoints.load_state_dict(archives[name])
    assert info["format"] == "torchscript" and info["wrapper"] is None
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].shape == tuple(value.shape), key
        assert str(got[key].dtype) == str(value.dtype).removeprefix("torch."), key
        assert _bits(got[key]) == value.reshape(-1).view(torch.uint8).numpy().tobytes(), key
    if name != "convnet_fp16":  # what the tree's features come to
        assert {"a.nb", "a.view", "seq.1.num_batches_tracked", "b.lin.weight"} <= set(got)
        assert "a.plain" not in got and "seq.0.bias" not in got
        assert got["seq.1.num_batches_tracked"] == 1


def test_inspect_convert_and_create_model(archives, tmp_path, capsys):
    """``inspect`` finds the ConvNet in a traced archive, ``convert`` writes it, and the reference
    ``create_model(checkpoint=...)`` loads the fp16 archive: its weights are the archive's,
    widened to float32 exactly."""
    import zoo.models

    assert cli.main(["inspect", str(archives["convnet_fp16"])]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"family\s+convnet", shown) and "format=torchscript" in shown, shown
    assert re.search(r"dtypes\s+float16", shown), shown
    out = tmp_path / "net.safetensors"
    assert cli.main(["convert", str(archives["convnet"]), "--to", "torch", "-o", str(out)]) == 0
    written, _ = checkpoints.load_state_dict(out)
    expected = _expected(archives["convnet"])
    assert list(written) == list(expected)
    assert all(np.array_equal(written[k], v.numpy()) for k, v in expected.items())
    model = zoo.models.create_model(checkpoint=str(archives["convnet_fp16"]))
    for key, value in _expected(archives["convnet_fp16"]).items():
        loaded = model.state_dict()[key]
        assert loaded.dtype == torch.float32 and torch.equal(loaded, value.float()), key


# --------------------------------------------------------------------------- hand-made archives


def _tensor(key: str, n: int) -> bytes:
    """A float32 tensor of ``n`` elements in record ``data/<key>``, as pickler.cpp writes it."""
    pid = b"(" + _pickle_str("storage") + b"ctorch\nFloatStorage\n" + _pickle_str(key)
    pid += _pickle_str("cpu") + b"K" + bytes([n]) + b"tQ"
    rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"K\x00(K" + bytes([n]) + b"t(K\x01t"
    return rebuild + b"\x89ccollections\nOrderedDict\n)RtR"


def _pickle_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _object(cls: str, items: list[tuple[str, bytes]]) -> bytes:
    """A TorchScript object as pickler.cpp writes it: GLOBAL, EMPTY_TUPLE, NEWOBJ, then BUILD
    with the dict of its attributes."""
    module, name = cls.rsplit(".", 1)
    body = b"".join(_pickle_str(k) + v for k, v in items)
    return b"c" + f"{module}\n{name}\n".encode() + b")\x81}(" + body + b"ub"


def _chain(depth: int) -> bytes:
    """A module holding a module ... ``depth`` deep (the pickle itself is flat: a stack)."""
    head = b"c__torch__\nM\n)\x81}(" + _pickle_str("training") + b"\x88" + _pickle_str("child")
    leaf = _object("__torch__.M", [("training", b"\x88"), ("child", b"N")])
    return b"\x80\x02" + head * depth + leaf + b"ub" * depth + b"."


def _shared(depth: int) -> bytes:
    """Module i holds module i+1 twice (one memo entry): 2**depth paths to the leaf."""
    out = _object("__torch__.M", [("training", b"\x88"), ("x", b"N"), ("y", b"N")])
    for i in range(depth):
        memo = b"r" + i.to_bytes(4, "little")  # LONG_BINPUT i
        out = _object(
            "__torch__.M",
            [("training", b"\x88"), ("x", out + memo), ("y", b"j" + i.to_bytes(4, "little"))],
        )
    return b"\x80\x02" + out + b"."


_DECLARE_M = "class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n  training : bool\n"


def _archive(path: Path, data: bytes, code: dict[str, bytes], records=None) -> Path:
    """A zip laid out as torch.jit.save lays it out: data.pkl, code/ (deflated), constants.pkl."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/data.pkl", data)
        for name, text in code.items():
            zf.writestr(f"a/code/{name}", text, compress_type=zipfile.ZIP_DEFLATED)
        for name, raw in (records or {}).items():
            zf.writestr(f"a/{name}", raw)
        zf.writestr("a/constants.pkl", b"\x80\x02).")
        zf.writestr("a/version", b"3\n")
    return path


def rebuild(src: Path, dst: Path, edit: Callable[[str, bytes], bytes | None]) -> Path:
    """``src``'s records through ``edit(name, data)`` (None drops the record), compression as
    it was."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data, compress_type=info.compress_type)
    return dst


def _edit_pickle(old: bytes, new: bytes) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("/data.pkl"):
            assert data.count(old) >= 1, old
            return data.replace(old, new, 1)
        return data

    return edit


#: the GLOBAL of the scripted tree's root
_ROOT = b"c__torch__.test_torchscript\nTree\n"
_CODE = "code/__torch__/test_torchscript.py"


def foreign_global(good, d):
    """The root's class named ``os.system``: a GLOBAL outside ``__torch__``."""
    return rebuild(good, d / "global.pt", _edit_pickle(_ROOT, b"cos\nsystem\n"))


def prefix_global(good, d):
    """``__torch__x``: a module whose name only starts like ``__torch__``."""
    return rebuild(good, d / "prefix.pt", _edit_pickle(_ROOT, b"c__torch__x\nT\n"))


def reduce_class(good, d):
    """The root made by REDUCE (a call of the archive class) in place of NEWOBJ."""
    return rebuild(good, d / "reduce.pt", _edit_pickle(_ROOT + b"q\x00)\x81", _ROOT + b"q\x00)R"))


def short_storage(good, d):
    """data/0 holds fewer bytes than its storage declares."""
    return rebuild(good, d / "short.pt", lambda n, b: b[:-2] if n.endswith("/data/0") else b)


def missing_storage(good, d):
    return rebuild(good, d / "missing.pt", lambda n, b: None if n.endswith("/data/3") else b)


def missing_declaration(good, d):
    """The code/ record that declares the root's class dropped."""
    return rebuild(good, d / "nodecl.pt", lambda n, b: None if n.endswith(_CODE) else b)


def forged_declaration(good, d):
    """A plain tensor attribute listed as a buffer by a line of no form python_print writes."""

    def edit(name, data):
        if name.endswith(_CODE):
            return data.replace(b'  __buffers__ = ["pb"', b'  __buffers__ = ["plain"; "pb"', 1)
        return data

    return rebuild(good, d / "forged.pt", edit)


def deep(good, d):
    return _archive(d / "deep.pt", _chain(1000), {"__torch__.py": _DECLARE_M + "  child : M\n"})


def shared(good, d):
    code = _DECLARE_M + "  x : __torch__.M\n  y : __torch__.M\n"
    return _archive(d / "shared.pt", _shared(40), {"__torch__.py": code})


def declared_bomb(good, d, mib: int = 24):
    """A code/ record inflating to ``mib`` MiB (1 KiB on disk per MiB), past CODE_LIMIT."""
    path = _archive(d / "bomb.pt", _chain(0), {})
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("a/code/__torch__.py")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as f:
            f.write(_DECLARE_M.encode())
            chunk = b" " * (1 << 20)
            for _ in range(mib):
                f.write(chunk)
    return path


def lying_bomb(good, d, mib: int = 24):
    """The same bomb declaring 1,000 bytes in its local and central headers: refused after
    CODE_LIMIT bytes of output."""
    path = declared_bomb(good, d, mib)
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo("a/code/__torch__.py").header_offset
    data = bytearray(path.read_bytes())
    fields = bytes(data[local + 4 : local + 26])  # version needed ... sizes: in the central too
    central = data.index(fields, local + 30) - 6
    assert data[central : central + 4] == b"PK\x01\x02"
    for at in (local + 22, central + 24):  # uncompressed size
        data[at : at + 4] = (1000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def not_a_module(good, d):
    """torch.save's pickle of a dict of tensors (with its data/ records) beside a constants.pkl:
    TorchScript's layout, no module in it."""
    pth = d / "dict.pth"
    torch.save({"w": torch.ones(3)}, pth)
    with zipfile.ZipFile(pth) as zin:
        records = {n.split("/", 1)[1]: zin.read(n) for n in zin.namelist()}
    del records["version"]  # _archive writes its own
    return _archive(d / "dict.pt", records.pop("data.pkl"), {}, records)


class State(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        self.w = state[0]
        self.training = state[1]


def setstate(good, d):
    """A module whose state its own ``__setstate__`` makes (torch.jit.load runs it)."""
    model = torch.jit.script(State())
    model.save(d / "setstate.pt")
    return d / "setstate.pt"


@dataclass
class Row:
    name: str
    make: Callable[[Path, Path], Path]
    error: type[errors.ConvertError]
    message: str


ROWS = [
    Row("GLOBAL os.system", foreign_global, errors.UnsafePickleError,
        r"would run code \(it imports os.system\)"),
    Row("GLOBAL __torch__x", prefix_global, errors.UnsafePickleError, r"it imports __torch__x.T"),
    Row("REDUCE of an archive class", reduce_class, errors.UnsafePickleError,
        r"calls the archive class __torch__.test_torchscript.Tree as no pickler writes it \(as a "
        "function"),
    Row("storage larger than its record", short_storage, errors.CheckpointError,
        r"record data/0 holds \d+ bytes, its tensor declares \d+"),
    Row("data/3 missing", missing_storage, errors.CheckpointError, "no record for storage 3"),
    Row("no declaration", missing_declaration, errors.CheckpointError,
        r"no declaration of class __torch__.test_torchscript.Tree in code/"),
    Row("forged declaration", forged_declaration, errors.CheckpointError,
        r"unreadable declaration of __torch__.test_torchscript.Sub in code/: "
        r"'  __buffers__ = \[\"plain\"; "),
    Row("1,000 modules deep", deep, errors.CheckpointError,
        r"a module tree nested deeper than 100 levels \(or a cycle\), at (child\.){16}"),
    Row("one module shared 2**40 times", shared, errors.CheckpointError,
        r"a module tree of more than 65536 modules and tensors"),
    Row("code/ bomb (declared)", declared_bomb, errors.CheckpointError,
        r"refused: record a/code/__torch__.py of 25165\d+ bytes \(limit 16 MiB\)"),
    Row("code/ bomb (declaring 1000 bytes)", lying_bomb, errors.CheckpointError,
        r"refused: record a/code/__torch__.py inflates beyond 16 MiB \(it declares 1000 bytes\)"),
    Row("data.pkl of a dict", not_a_module, errors.NotACheckpointError,
        r"TorchScript archive whose data.pkl holds a dict, not a module"),
    Row("__setstate__ module", setstate, errors.UnsafePickleError,
        r"module \(root\) of class __torch__.test_torchscript.State gets its state from its own "
        "__setstate__"),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_hostile_archive(row: Row, archives, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    path = row.make(archives["scripted"], src)
    for args in (["convert", str(path), "--to", "torch", "-o", str(out / "o.pth")], ["inspect"]):
        code = cli.main(args if args[0] == "convert" else ["inspect", str(path)])
        captured = capsys.readouterr()
        one_line(code, captured.err, row.error.exit_code, row.message)
        assert captured.out == "", "partial output"
    assert list(out.iterdir()) == [], "an output (or temporary) file was left behind"


#: the read in a child with every framework unimportable: what it loads (sha-256 per tensor) and
#: its peak resident memory refusing the lying bomb
_CHILD = """
import hashlib, json, sys
for name in ("torch", "tensorflow", "keras", "jax", "flax"):
    sys.modules[name] = None
from weight_convert import checkpoints, cli
got, _ = checkpoints.load_state_dict(sys.argv[1])
digests = {k: [str(v.dtype), hashlib.sha256(v.tobytes()).hexdigest()] for k, v in got.items()}
code = cli.main(["inspect", sys.argv[2]])
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
print(json.dumps([digests, code, int(peak[0].split()[1]) / 1024]))
"""


def test_read_without_frameworks_and_bomb_memory(archives, tmp_path):
    """With torch unimportable (nothing from the archive can run through it) the traced tree
    reads as torch.jit.load reads it, and the bomb is refused at a bounded peak (~70 MB here:
    CODE_LIMIT of output, not the 256 MiB it inflates to, plus the interpreter)."""
    bomb = lying_bomb(None, tmp_path, 256)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(archives["traced"]), str(bomb)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    digests, code, peak = json.loads(proc.stdout.splitlines()[-1])
    expected = _expected(archives["traced"])
    assert list(digests) == list(expected)
    for key, value in expected.items():
        data = value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert digests[key][1] == hashlib.sha256(data).hexdigest(), key
    assert code == errors.CheckpointError.exit_code and "inflates beyond" in proc.stderr
    assert peak < 120, f"peak RSS {peak:.0f} MB"


def test_declarations_are_read_as_data():
    """The parser takes the forms python_print writes and nothing else: a method body's lines
    (here one declaring buffers) are never read, constants are skipped."""
    text = (
        "class M(Module):\n"
        '  __parameters__ = ["w", ]\n'
        '  __buffers__ = ["b", "c", ]\n'
        '  __annotations__ = []\n  __annotations__["0"] = __torch__.L\n'
        "  w : Tensor\n  b : Tensor\n  c : Optional[Tensor]\n"
        "  eps : Final[float] = 1.0000000000000001e-05\n"
        "  def forward(self: __torch__.M) -> None:\n"
        '    __buffers__ = ["w"]\n'
        "  def __getstate__(self: __torch__.M) -> int:\n    return 0\n"
        "class L:\n  x : int\n"
    )
    found = torchscript._declarations("__torch__", text)
    m = found["__torch__.M"]
    assert (m.base, m.parameters, m.buffers) == ("Module", {"w"}, {"b", "c"})
    assert m.attributes == (("0", "__torch__.L"), ("w", "Tensor"), ("b", "Tensor"),
                            ("c", "Optional[Tensor]"))  # fmt: skip
    assert not m.custom_state  # __getstate__ alone: torch uses the attribute dict
    assert found["__torch__.L"].base == "" and found["__torch__.L"].attributes == (("x", "int"),)
    with pytest.raises(errors.CheckpointError, match="unreadable declaration of __torch__.M"):
        torchscript._declarations("__torch__", "class M(Module):\n  w = Tensor\n")


def test_declared_kinds_and_order_as_torch_reads_them(tmp_path):
    """A hand-made archive (declarations only, no method: torch.jit.load runs nothing of it)
    whose attribute order puts a buffer before a parameter, with a buffer typed
    ``Optional[Tensor]`` (torch's buffer policy takes ``Tensor`` only), a ``None`` parameter
    and a ``__annotations__["0"]`` buffer: what torch.jit.load's state dict holds, in its order."""
    code = (
        'class M(Module):\n  __parameters__ = ["w", "opt", ]\n  __buffers__ = ["b", "ob", "0", ]\n'
        "  b : Tensor\n  w : Tensor\n  ob : Optional[Tensor]\n  training : bool\n"
        '  __annotations__["0"] = Tensor\n  opt : Optional[Tensor]\n'
    )
    sizes = {"b": 2, "w": 3, "ob": 4, "0": 1}
    items = [(name, _tensor(str(i), n)) for i, (name, n) in enumerate(sizes.items())]
    items[3:3] = [("training", b"\x88")]
    items.append(("opt", b"N"))
    data = b"\x80\x02" + _object("__torch__.M", items) + b"."
    records = {
        f"data/{i}": np.arange(n, dtype=np.float32).tobytes() for i, n in enumerate(sizes.values())
    }
    path = _archive(tmp_path / "m.pt", data, {"__torch__.py": code.encode()}, records)
    expected = _expected(path)
    got, _ = checkpoints.load_state_dict(path)
    assert list(expected) == ["w", "b", "0"] and list(got) == list(expected)
    assert all(np.array_equal(got[k], v.numpy()) for k, v in expected.items())

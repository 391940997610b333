"""A ``.keras`` source reads its ``model.weights.h5`` in place (``keras_files.MemberFile``): as
many bytes from disk as the bare ``.weights.h5`` takes, where reading the member through
``zipfile`` re-reads it from its start at every backward seek (O(n^2): minutes for SAM ViT-B;
``scripts/keras_read_speed.py`` times it). The zip's declarations that the in-place read trusts
are checked first: each hostile archive (a member running past the file or into the central
directory, members overlapping, a local header elsewhere, a deflated member that inflates short
or does not fit the temporary folder) is one line with the corrupt-file exit code. A deflated
member, which Keras does not write, is inflated into a temporary file and reads the same.
Tiny Swin only."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import cli_checks
import numpy as np
import pytest
from test_port_files import KERAS_SWIN

from weight_convert import cli, errors, keras_files, port_files
from zoo import compat

#: one stage, two blocks, few distinct shapes: a small file with every kind of tensor
SWIN = KERAS_SWIN
WEIGHTS = keras_files.WEIGHTS_MEMBER


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """``m.keras`` and ``m.weights.h5`` of a Keras Swin holding random values (the values by
    port path, under ``values``)."""
    from weight_convert.frameworks import keras_port

    model = keras_port.build_model(SWIN, initialize=False)  # no initializer to compile on JAX
    rng = np.random.default_rng(0)
    values = {
        p: rng.standard_normal(s).astype(np.float32) for p, s in keras_port.shapes(model).items()
    }
    keras_port.assign(model, values)
    root = tmp_path_factory.mktemp("keras_member")
    model.save(str(root / "m.keras"))
    model.save_weights(str(root / "m.weights.h5"))
    port_files.write_config_attr(root / "m.weights.h5", SWIN)
    with zipfile.ZipFile(root / "m.keras") as z:
        assert z.getinfo(WEIGHTS).compress_type == zipfile.ZIP_STORED  # what Keras writes
    return {"keras": root / "m.keras", "weights": root / "m.weights.h5", "values": values}


def _disk_reads() -> int:
    """Bytes this process has read through read(2)/pread(2) so far (page cache hits too)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _read(path: Path) -> tuple[dict[str, np.ndarray], int]:
    """The values of a Keras file of the zoo and the bytes read from disk to get them."""
    before = _disk_reads()
    values = port_files.read_keras_weights_h5(path)
    return values, _disk_reads() - before


@pytest.mark.keras
@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts reads with /proc/self/io")
def test_keras_source_reads_what_its_weights_h5_reads(files):
    """The checks and Keras' loader read the member in place: the ``.keras`` takes at most
    1.25x the bytes the bare ``.weights.h5`` of the same weights takes (measured: 1.001x on
    each backend, both 3.3x the file: the HDF5 metadata read by the checks and the loader; read
    through ``zipfile`` 25x, Keras' loader alone through it 6x), and gives the values saved,
    bit for bit, as Keras' own loader does (``zoo.compat``'s fallback, run first: it also
    makes the first-call imports that would count as reads)."""
    from weight_convert.frameworks import keras_port

    model = keras_port.build_model(SWIN, initialize=False)
    try:
        with compat.forced_fallbacks():  # Keras' own loader, through zipfile
            compat.keras_load_weights(model, None, files["keras"])
    finally:
        compat.keras_settle(model.weights)
    fallback = keras_port.read(model)
    _, bare = _read(files["weights"])
    values, read = _read(files["keras"])
    assert read <= 1.25 * bare, f".keras: {read} bytes read, its .weights.h5 {bare}"
    for got in (values, fallback):
        assert got.keys() == files["values"].keys()
        for name, value in files["values"].items():
            assert got[name].tobytes() == value.tobytes(), name


def _datasets(path: Path) -> dict[str, bytes]:
    with keras_files.open_weights(str(path), path.suffix == ".keras") as (f, _):
        return {n: d[()].tobytes() for n, d in keras_files.weights_datasets(f, str(path)).items()}


def _rezipped(src: Path, out: Path, method: int) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", method) as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
    return out


def test_stored_and_deflated_members_read_the_weights_h5(files, tmp_path):
    """Every dataset of the member, read in place or inflated, is the bare file's."""
    want = _datasets(files["weights"])
    assert len(want) == len(files["values"])
    assert _datasets(files["keras"]) == want
    assert _datasets(_rezipped(files["keras"], tmp_path / "d.keras", zipfile.ZIP_DEFLATED)) == want


# --------------------------------------------------------------------------- hostile archives

_CENTRAL_FIELDS = {"compress_size": 20, "file_size": 24, "header_offset": 42}


def central_edited(
    src: Path, out: Path, name: str, edit: Callable[[zipfile.ZipFile, zipfile.ZipInfo], dict]
) -> Path:
    """``src`` with fields of ``name``'s central directory record (``_CENTRAL_FIELDS``) set to
    what ``edit(archive, info)`` returns; the local headers and data unchanged."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        fields, pos = edit(z, z.getinfo(name)), z.start_dir
    while data[pos : pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        if data[pos + 46 : pos + 46 + n] == name.encode():
            for field, value in fields.items():
                struct.pack_into("<L", data, pos + _CENTRAL_FIELDS[field], value)
            out.write_bytes(bytes(data))
            return out
        pos += 46 + n + m + k
    raise KeyError(name)


def _grown(by: int) -> Callable[[zipfile.ZipFile, zipfile.ZipInfo], dict]:
    return lambda z, i: {"compress_size": i.compress_size + by, "file_size": i.file_size + by}


def _first_member(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return min(z.infolist(), key=lambda i: i.header_offset).filename


HOSTILE = {
    "weights run past the end of the file": (
        lambda k, d: central_edited(k, d / "past.keras", WEIGHTS, _grown(1 << 16)),
        rf"{WEIGHTS} runs past the end of the file \(\d+ bytes\)",
    ),
    "weights run into the central directory": (
        lambda k, d: central_edited(k, d / "into.keras", WEIGHTS, _grown(8)),
        rf"{WEIGHTS} runs past the central directory",
    ),
    "weights at an offset past the file": (
        lambda k, d: central_edited(
            k, d / "offset.keras", WEIGHTS, lambda z, i: {"header_offset": k.stat().st_size + 64}
        ),
        rf"{WEIGHTS} has no local header at its offset",
    ),
    "weights at another member's local header": (
        lambda k, d: central_edited(
            k,
            d / "quoted.keras",
            WEIGHTS,
            lambda z, i: {"header_offset": z.getinfo("config.json").header_offset},
        ),
        rf"{WEIGHTS}'s local header names another member",
    ),
    "first member overlapping the next": (
        lambda k, d: central_edited(k, d / "overlap.keras", _first_member(k), _grown(64)),
        r"members \S+ and \S+ overlap",
    ),
    "stored weights whose sizes disagree": (
        lambda k, d: central_edited(
            k, d / "sizes.keras", WEIGHTS, lambda z, i: {"file_size": i.file_size - 1}
        ),
        rf"{WEIGHTS} is stored as \d+ bytes but declares \d+",
    ),
    "deflated weights inflating short": (
        lambda k, d: central_edited(
            _rezipped(k, d / "deflated.keras", zipfile.ZIP_DEFLATED),
            d / "short.keras",
            WEIGHTS,
            lambda z, i: {"file_size": i.file_size + 4096},
        ),
        rf"{WEIGHTS} inflates to \d+ bytes, not the \d+ it declares",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_one_line(case, files, tmp_path, capsys):
    make, message = HOSTILE[case]
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    source = make(files["keras"], tmp_path / "in")
    code = cli.main(["convert", str(source), "--to", "torch", "-o", str(tmp_path / "out/o.pth")])
    cli_checks.one_line(code, capsys.readouterr()[1], errors.CheckpointError.exit_code, message)
    assert not list((tmp_path / "out").iterdir()), "an output was written"


def test_deflated_member_that_does_not_fit_the_temporary_folder(
    files, tmp_path, capsys, monkeypatch
):
    """Checked against the free space before a byte is inflated."""
    source = _rezipped(files["keras"], tmp_path / "d.keras", zipfile.ZIP_DEFLATED)
    monkeypatch.setattr(keras_files, "TEMP_MARGIN", 1 << 62)
    code = cli.main(["convert", str(source), "--to", "torch", "-o", str(tmp_path / "o.pth")])
    message = rf"{WEIGHTS} is deflated; inflating its \d+ bytes needs more than the \d+ free in "
    cli_checks.one_line(code, capsys.readouterr()[1], errors.CheckpointError.exit_code, message)

"""Tensors that view one storage (``torch.save`` of slices and transposes, or a file made so):
each is read as the span its view covers, not its whole storage, and every record's CRC-32 is
still checked, once. A 512 MiB storage that every tensor views (~1 MB on disk) used to be read
whole for each tensor: 548 MB peak and 33 s for the tiny Swin; now one CRC pass plus the spans."""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import checkpoint_factory as factory
import hostile
import numpy as np
import pytest
import torch
from cli_checks import peak_rss_mb

from weight_convert import checkpoints, cli, errors
from zoo.registry import FAMILIES

#: peak resident memory allowed to the conversion of the views file: 40 MB measured here (a
#: tiny conversion peaks ~36 MB; the CRC pass adds one 4 MiB buffer); 548 MB when each tensor
#: read its whole storage
VIEWS_BOUND_MB = 100


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    config = dataclasses.asdict(FAMILIES["swin"].tiny)
    return Path(factory.official_swin2d(root / "swin.pth", seed=0, **config)[0])


def _source(good: Path) -> dict[str, torch.Tensor]:
    return torch.load(good, weights_only=True)["model"]


def test_views_of_one_huge_storage_read_their_spans(good, tmp_path):
    path = hostile.views_of_one_storage(good, tmp_path, nbytes=512 << 20)
    assert path.stat().st_size > 512 << 20 and path.stat().st_blocks * 512 < 16 << 20, "not sparse"
    code, err, peak = peak_rss_mb(["convert", str(path), "--to", "torch", "-o", "o.pth"], tmp_path)
    assert code == 0, err
    assert peak < VIEWS_BOUND_MB, f"peak RSS {peak:.0f} MB"
    back, source = torch.load(tmp_path / "o.pth", weights_only=True)["model"], _source(good)
    assert list(back) == list(source) and all(torch.equal(back[k], source[k]) for k in source)


def test_one_pass_per_record_plus_the_spans(good, tmp_path, monkeypatch):
    """Bytes read to load every tensor: one pass over the big record (its CRC) plus each
    tensor's span, not a pass over the storage per tensor (~100 x 64 MiB)."""
    nbytes = 64 << 20
    path = hostile.views_of_one_storage(good, tmp_path, nbytes=nbytes)
    read, preadv = [0], os.preadv

    def counted(fd, buffers, offset):
        n = preadv(fd, buffers, offset)
        read[0] += n
        return n

    monkeypatch.setattr(os, "preadv", counted)
    tensors, _ = checkpoints.open_state_dict(path)
    source = _source(good)
    for key, tensor in tensors.items():
        np.testing.assert_array_equal(tensor.load(), source[key].numpy())
    model_bytes = sum(t.numel() * t.element_size() for t in source.values())
    assert read[0] <= nbytes + 2 * model_bytes + (1 << 20), f"{read[0] >> 20} MiB read"


def test_crc_is_checked_when_views_read_part_of_a_record(good, tmp_path, capsys):
    """A byte flipped where no tensor looks (the storage's tail): the CRC pass still finds it."""
    nbytes = 8 << 20
    path = hostile.views_of_one_storage(good, tmp_path, nbytes=nbytes)
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.file_size == nbytes)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        names, extra = np.frombuffer(f.read(4), "<u2")
        f.seek(info.header_offset + 30 + int(names) + int(extra) + nbytes - 1)
        f.write(b"\x01")
    code = cli.main(["convert", str(path), "--to", "torch", "-o", str(tmp_path / "o.pth")])
    err = capsys.readouterr().err
    assert code == errors.CheckpointError.exit_code and err.count("\n") == 1, err
    assert f"record {info.filename} fails its CRC-32 check" in err
    assert not (tmp_path / "o.pth").exists()

"""How each bad input of test_bad_inputs.py is made from a good checkpoint (``good``: the small
official-layout Swin ``.pth`` and its Flax file), each in the directory ``d``."""

from __future__ import annotations

import pathlib
import pickle
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Payload",
    "official_state",
    "missing_file",
    "empty_file",
    "truncated_pth",
    "truncated_safetensors",
    "random_bytes",
    "safetensors_named_pth",
    "unknown_extension",
    "malicious_pth",
    "malicious_pkl",
    "object_array_pkl",
    "unknown_layout",
    "shape_mismatch",
    "missing_key",
    "unexpected_key",
    "nan_weight",
    "float16_overflow",
    "flax_missing_key",
    "the_good_one",
]


def official_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def save(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    torch.save({"model": sd}, path)
    return path


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: harmless, but code all the same."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


# ----------------------------------------------------------------------- how each bad file is made


def missing_file(good, d):
    return d / "nowhere.pth"


def empty_file(good, d):
    (d / "empty.pth").write_bytes(b"")
    return d / "empty.pth"


def truncated_pth(good, d):
    data = good["pth"].read_bytes()
    (d / "cut.pth").write_bytes(data[: len(data) // 2])
    return d / "cut.pth"


def truncated_safetensors(good, d):
    data = good["flax"].read_bytes()
    (d / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    return d / "cut.safetensors"


def random_bytes(good, d):
    (d / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    return d / "random.pth"


def safetensors_named_pth(good, d):
    (d / "really_safetensors.pth").write_bytes(good["flax"].read_bytes())
    return d / "really_safetensors.pth"


def unknown_extension(good, d):
    (d / "weights.txt").write_bytes(good["pth"].read_bytes())
    return d / "weights.txt"


def malicious_pth(good, d):
    sd = official_state(good["pth"])
    torch.save({"model": sd, "hook": Payload(d / "MARKER")}, d / "evil.pth")
    return d / "evil.pth"


def malicious_pkl(good, d):
    data = {"model": {"w": np.zeros(2, np.float32)}, "hook": Payload(d / "MARKER")}
    (d / "evil.pkl").write_bytes(pickle.dumps(data))
    return d / "evil.pkl"


def object_array_pkl(good, d):
    """A detectron2-style pickle whose weight is an object array (and a complex one)."""
    weights = {"w": np.array([1, "x"], dtype=object), "c": np.zeros(2, np.complex64)}
    (d / "objects.pkl").write_bytes(pickle.dumps({"model": weights}))
    return d / "objects.pkl"


def unknown_layout(good, d):
    return save(
        d / "resnet.pth", {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}
    )


def shape_mismatch(good, d):
    sd = official_state(good["pth"])
    sd["layers.1.blocks.0.mlp.fc1.bias"] = torch.zeros(5)
    return save(d / "shape.pth", sd)


def missing_key(good, d):
    sd = official_state(good["pth"])
    del sd["layers.1.blocks.1.norm2.bias"]
    return save(d / "missing_key.pth", sd)


def unexpected_key(good, d):
    sd = official_state(good["pth"])
    sd["aux_head.weight"] = torch.zeros(4, 4)
    return save(d / "extra_key.pth", sd)


def nan_weight(good, d):
    sd = official_state(good["pth"])
    sd["layers.0.blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    sd["head.bias"][3] = float("inf")
    return save(d / "nan.pth", sd)


def float16_overflow(good, d):
    """Finite float32 values beyond float16's range (65504): ``--dtype float16`` makes them Inf."""
    sd = official_state(good["pth"])
    sd["layers.0.blocks.0.attn.qkv.weight"][0, 0] = 1e5
    sd["head.weight"][1, 2] = -7e4
    return save(d / "big.pth", sd)


def flax_missing_key(good, d):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(good["flax"]), "numpy") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys() if k != "norm.bias"}
        metadata = f.metadata()
    save_file(arrays, str(d / "flax_missing.safetensors"), metadata=metadata)
    return d / "flax_missing.safetensors"


def the_good_one(good, d):
    return good["pth"]

"""ViTDet (detectron2 ViT + simple feature pyramid): reference against both ports on a tiny config,
the position-table resize against detectron2's ``F.interpolate`` formula, and detectron2 ``.pkl``
checkpoints (safe reading, the backbone key layout).

The full-size ``vitdet_base`` at 1024 x 1024 is ``slow``.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import pickle
import pickletools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weight_convert.checkpoints import CheckpointError
from weight_convert.detectron2 import UnsafePickleError, load_pkl
from weight_convert.frameworks import reference as ref_fw
from weight_convert.parity import MODEL_TOLERANCE, compare
from zoo.configs import VARIANTS
from zoo.families.vitdet import ViTDetConfig
from zoo.models.vitdet import SimpleFeaturePyramid, get_abs_pos
from zoo.registry import FAMILIES
from zoo.tensor_format import Format

#: the family's tiny config with 4 blocks, windows of 4 in blocks 0 and 2 (a 4 x 4 pre-training
#: position grid, img_size 128: global blocks' rel-pos tables made for an 8 x 8 grid)
TINY = dataclasses.replace(FAMILIES["vitdet"].tiny, depth=4, window_block_indexes=(0, 2))


def _port_model(adapter, config: ViTDetConfig):
    """The port's SimpleFeaturePyramid for ``config``, its variables created (Flax: abstract,
    for the parity harness to assign)."""
    if adapter.NAME.startswith("keras"):
        from ports.keras.models.vitdet import SimpleFeaturePyramid as KerasSFP

        model = KerasSFP(config)
        model.build((None, None, None, config.in_chans))
        return model
    from ports.flax.models import abstract_model

    # abstract parameters (no random initialization to compile): the weights are assigned anyway
    model = abstract_model(config)
    model.eval()
    return model


def _parity(adapter, config: ViTDetConfig, shape: tuple[int, ...]):
    reference = ref_fw.randomize_(SimpleFeaturePyramid(config).eval(), 0)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    return compare(
        reference,
        _port_model(adapter, config),
        adapter,
        [x],
        [Format.CHANNELS_FIRST],
        tolerance=MODEL_TOLERANCE,
        name=f"vitdet{list(shape)}",
    )


@pytest.mark.parametrize(
    "shape",
    [
        # 8 x 8 token grid: the 4 x 4 position table is resized (bicubic); batch 2
        pytest.param((2, 3, 128, 128), id="b2-128"),
        # 6 x 10 grid: non-square, global blocks' rel-pos tables interpolated, windows padded
        pytest.param((1, 3, 96, 160), id="96x160"),
    ],
)
def test_vitdet_parity(shape, port):
    report = _parity(port, TINY, shape)
    assert report.passed, report.table()
    assert not report.unmatched, report.unmatched
    assert len(report.outputs) == 5  # p2 .. p6
    h, w = shape[2] // 16, shape[3] // 16
    strides = [(4 * h, 4 * w), (2 * h, 2 * w), (h, w), (h // 2, w // 2), (-(-h // 4), -(-w // 4))]
    assert [e.shape[1:3] for e in report.outputs] == strides
    paths = {e.path for e in report.layers}
    assert {f"net.blocks.{i}.mlp" for i in range(TINY.depth)} <= paths
    # every pyramid member, parameter-free ones included, and the top block were compared
    assert {"net", "simfp_2.2", "simfp_2.4.norm", "simfp_5.0", "simfp_5.2", "top_block"} <= paths


@pytest.mark.parametrize(
    ("pretrain", "grid"), [(4, (8, 8)), (4, (6, 10)), (4, (4, 4)), (4, (3, 1)), (14, (64, 64))]
)
def test_abs_pos_matches_detectron2_interpolation(pretrain, grid):
    """The reference's constant-matrix resize against detectron2's ``get_abs_pos`` formula
    (14 -> 64: vitdet_base at 1024)."""
    shape = (1, 1 + pretrain * pretrain, 64)
    table = torch.from_numpy(np.random.default_rng(0).normal(0, 0.5, shape).astype(np.float32))
    got = get_abs_pos(table, True, grid)
    square = table[:, 1:].reshape(1, pretrain, pretrain, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(square, size=grid, mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1)
    assert got.shape == (1, *grid, 64)
    assert (got - expected).abs().max().item() <= 1e-6


def test_state_dict_layout_and_order():
    keys = list(SimpleFeaturePyramid(TINY).state_dict())
    # detectron2 registers the pyramid stages before the backbone
    assert keys[0] == "simfp_2.0.weight" and keys.index("net.pos_embed") > keys.index(
        "simfp_5.2.norm.bias"
    )
    assert {
        "simfp_2.3.weight",
        "simfp_2.4.norm.weight",
        "simfp_3.1.norm.bias",
        "simfp_4.0.weight",
    } <= set(keys)
    assert not any(k.startswith(("simfp_2.2", "simfp_5.0", "top_block")) for k in keys)
    assert "simfp_2.4.bias" not in keys  # the pyramid convs have no bias (norm="LN")


# --------------------------------------------------------------------------- detectron2 .pkl

#: Keys a detectron2 Mask R-CNN ViTDet checkpoint holds besides ``backbone.*`` (config
#: ``mask_rcnn_vitdet``: 2-conv RPN head, 4conv1fc box head with LN, mask head).
DETECTRON2_EXTRA = {
    "proposal_generator.rpn_head.conv.conv0.weight": (256, 256, 3, 3),
    "proposal_generator.rpn_head.conv.conv0.bias": (256,),
    "proposal_generator.rpn_head.objectness_logits.weight": (3, 256, 1, 1),
    "proposal_generator.rpn_head.anchor_deltas.weight": (12, 256, 1, 1),
    "roi_heads.box_head.conv1.weight": (256, 256, 3, 3),
    "roi_heads.box_head.conv1.norm.weight": (256,),
    "roi_heads.box_head.fc1.weight": (1024, 12544),
    "roi_heads.box_predictor.cls_score.weight": (81, 1024),
    "roi_heads.box_predictor.bbox_pred.weight": (320, 1024),
    "roi_heads.mask_head.mask_fcn1.weight": (256, 256, 3, 3),
    "roi_heads.mask_head.predictor.weight": (80, 256, 1, 1),
    "pixel_mean": (3, 1, 1),  # older checkpoints stored the (now non-persistent) buffers
    "pixel_std": (3, 1, 1),
}


def _detectron2_to_reference(model: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
    """The layout rule for detectron2 ViTDet checkpoints: ``backbone.`` stripped from
    ``backbone.net.*`` and ``backbone.simfp_*`` keys; every other key dropped."""
    out, dropped = {}, []
    for key, value in model.items():
        if key.startswith(("backbone.net.", "backbone.simfp_")):
            out[key[len("backbone.") :]] = value
        else:
            dropped.append(key)
    return out, dropped


def _detectron2_pickle(path, reference, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    model = {f"backbone.{k}": v for k, v in ref_fw.state_dict(reference).items()}
    rng = np.random.default_rng(1)
    model.update(
        {k: rng.standard_normal(s).astype(np.float32) for k, s in DETECTRON2_EXTRA.items()}
    )
    data = {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)


def test_detectron2_checkpoint_loads_strictly(tmp_path):
    original = ref_fw.randomize_(SimpleFeaturePyramid(TINY).eval(), 3)
    path = tmp_path / "model_final.pkl"
    _detectron2_pickle(path, original)
    tensors, info = load_pkl(path)
    assert info["wrapper"] == "model" and info["author"] == "Detectron2 Model Zoo"
    assert info["matching_heuristics"] is True and info["ignored"] == []
    state, dropped = _detectron2_to_reference(tensors)
    assert sorted(dropped) == sorted(DETECTRON2_EXTRA)
    loaded = SimpleFeaturePyramid(TINY).eval()
    ref_fw.load_state_dict(loaded, state)  # strict: no key missing or unexpected
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96), dtype=np.float32)
    for a, b in zip(ref_fw.call(original, [x]), ref_fw.call(loaded, [x]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
@pytest.mark.parametrize("numpy1", [False, True], ids=["numpy2-names", "numpy1-names"])
def test_load_pkl_round_trip(tmp_path, protocol, numpy1):
    from collections import OrderedDict

    arrays = OrderedDict(
        a=np.arange(12, dtype=np.float32).reshape(3, 4),
        b=np.asfortranarray(np.ones((2, 3), dtype=np.float64)),
        c=np.array([1, 2], dtype=np.int64),
    )
    data = {"model": arrays, "__author__": "test", "scalar": np.float32(2.5)}
    raw = pickle.dumps(data, protocol=protocol)
    if numpy1:  # what NumPy 1.x writes: numpy.core instead of numpy._core
        if protocol > 2:  # length-prefixed names; optimize() rewrites the frame lengths
            raw = raw.replace(b"\x16numpy._core.multiarray", b"\x15numpy.core.multiarray")
            raw = raw.replace(b"\x13numpy._core.numeric", b"\x12numpy.core.numeric")
            raw = pickletools.optimize(raw)
        else:  # GLOBAL opcodes: newline-terminated text
            raw = raw.replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy._core" not in raw and b"numpy.core" in raw
    path = tmp_path / "w.pkl"
    path.write_bytes(raw)
    tensors, info = load_pkl(path)
    assert list(tensors) == ["a", "b", "c"]
    for key, value in arrays.items():
        np.testing.assert_array_equal(tensors[key], value)
        assert tensors[key].dtype == value.dtype
    assert info["extra"] == ["__author__", "scalar"]


class _Python2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2's ``str`` opcodes, as the cPickle of old detectron ``.pkl``
    files did (read with ``encoding="latin1"``: the array data arrives as ``str``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str(self, obj: bytes) -> None:
        short = len(obj) < 256
        size = bytes([len(obj)]) if short else len(obj).to_bytes(4, "little")
        self.write((b"U" if short else b"T") + size + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_load_pkl_python2_strings(tmp_path, protocol):
    arrays = {"w": np.arange(300, dtype=np.float32).reshape(3, 100), "b": np.ones(2, ">f8")}
    path = tmp_path / "py2.pkl"
    with open(path, "wb") as f:
        _Python2Pickler(f, protocol=protocol).dump({"model": arrays, "s": np.float64(3.0)})
    tensors, info = load_pkl(path)
    assert list(tensors) == ["w", "b"] and info["extra"] == ["s"]
    for key, value in arrays.items():
        np.testing.assert_array_equal(tensors[key], value)
        assert tensors[key].dtype == value.dtype.newbyteorder("=")  # as NumPy unpickles it


def test_load_pkl_bare_dict_and_scalars(tmp_path):
    path = tmp_path / "bare.pkl"
    with open(path, "wb") as f:
        pickle.dump({"w": np.zeros(3, np.float32), "n": np.int64(7), "note": "x"}, f)
    tensors, info = load_pkl(path)
    assert info["wrapper"] is None and info["ignored"] == ["note"]
    assert tensors["n"].shape == () and int(tensors["n"]) == 7


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class _NumpyButNotArrays:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (np.save, (str(self.marker), np.zeros(1)))


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (_RunsCommand, r"(posix|os|nt)\.system"),
        (_RunsPython, r"builtins\.exec"),
        (_NumpyButNotArrays, r"numpy\.save"),
    ],
)
def test_load_pkl_refuses_code(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    model = {"backbone.net.pos_embed": np.zeros((1, 2)), "x": payload(marker)}
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "evil"}, f)
    with pytest.raises(UnsafePickleError, match=f"it imports {refused}"):
        load_pkl(path)
    assert not marker.exists() and not (tmp_path / "pwned.npy").exists()
    assert issubclass(UnsafePickleError, ValueError)


def test_load_pkl_refuses_persistent_ids(tmp_path):
    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if isinstance(obj, np.ndarray) else None

    path = tmp_path / "pid.pkl"
    with open(path, "wb") as f:
        WithIds(f).dump({"model": {"w": np.zeros(2)}})
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_pkl(path)


def test_load_pkl_bad_files(tmp_path):
    good = tmp_path / "good.pkl"
    with open(good, "wb") as f:
        pickle.dump({"model": {"w": np.zeros((64, 64), np.float32)}}, f)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_pkl(truncated)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_pkl(garbage)
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([np.zeros(2)]))
    with pytest.raises(CheckpointError, match="holds a list"):
        load_pkl(listed)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(pickle.dumps({"model": {}, "__author__": "x"}))
    with pytest.raises(CheckpointError, match="no arrays"):
        load_pkl(empty)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_pkl(tmp_path / "missing.pkl")


# --------------------------------------------------------------------------- Keras saving


@pytest.mark.keras
def test_keras_file_round_trip(tmp_path):
    import keras

    from weight_convert.frameworks import keras_port

    model = _port_model(keras_port, TINY)
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.1, tuple(v.shape)).astype(v.dtype))
    x = rng.standard_normal((1, 64, 96, 3)).astype("float32")
    path = tmp_path / "vitdet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and loaded.config == TINY
    for a, b in zip(keras_port.call(model, [x]), keras_port.call(loaded, [x]), strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_vitdet_base_full_size(port):
    """vitdet_base at its training size (1024 x 1024: 64 x 64 tokens, position table resized
    from 14 x 14)."""
    report = _parity(port, VARIANTS["vitdet_base"].config, (1, 3, 1024, 1024))
    assert report.passed, report.table()
    assert not report.unmatched, report.unmatched
    assert len(report.outputs) == 5

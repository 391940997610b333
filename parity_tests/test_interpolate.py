"""zoo.interpolate: constant resize matrices against ``torch.nn.functional.interpolate``
(align_corners=False, antialias=False), applied separably in float32 as the models apply them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.interpolate import resize_matrix
from zoo.windows import rel_pos_resize_matrix

#: (H, W) -> (h, w): up, down, mixed, odd, to and from 1, equal, ViTDet's 14 -> 64 and back.
SIZES_2D = [
    (14, 14, 64, 64),
    (64, 64, 14, 14),
    (14, 14, 6, 10),
    (4, 4, 8, 8),
    (4, 4, 6, 10),
    (7, 9, 13, 5),
    (17, 11, 16, 12),
    (3, 3, 100, 2),
    (100, 37, 13, 91),
    (1, 5, 3, 1),
    (5, 3, 5, 8),
    (9, 9, 9, 9),
]


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("H", "W", "h", "w"), SIZES_2D)
def test_2d_matches_torch(mode, H, W, h, w):
    # |x| <= 1, the scale of position tables; float32 rounding grows with |x|.
    x = np.random.default_rng(H * 1000 + w).uniform(-1, 1, (2, 3, H, W)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(x), size=(h, w), mode=mode, align_corners=False)
    m_h = resize_matrix(H, h, mode).astype(np.float32)
    m_w = resize_matrix(W, w, mode).astype(np.float32)
    got = np.einsum("ip,bcpq->bciq", m_h, x) @ m_w.T
    assert np.abs(got - expected.numpy()).max() <= 1e-6


@pytest.mark.parametrize(
    ("n", "m"), [(7, 13), (13, 7), (27, 127), (127, 27), (1, 4), (4, 1), (5, 5)]
)
def test_linear_matches_torch_and_rel_pos_matrix(n, m):
    x = np.random.default_rng(n * 100 + m).uniform(-1, 1, (2, 3, n)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(x), size=m, mode="linear", align_corners=False)
    matrix = resize_matrix(n, m, "linear")
    assert np.abs(x @ matrix.T.astype(np.float32) - expected.numpy()).max() <= 1e-6
    # the relative-position tables use the same interpolation (zoo.windows)
    assert np.abs(matrix - rel_pos_resize_matrix(n, m)).max() <= 1e-7
    np.testing.assert_array_equal(resize_matrix(n, m, "bilinear"), matrix)


@pytest.mark.parametrize("mode", ["linear", "bicubic"])
def test_matrix_properties(mode):
    m = resize_matrix(14, 37, mode)
    assert m.shape == (37, 14) and m.dtype == np.float64
    assert np.abs(m.sum(axis=1) - 1.0).max() <= 1e-6  # interpolation reproduces constants
    assert not m.flags.writeable
    assert resize_matrix(14, 37, mode) is m  # cached per geometry
    np.testing.assert_array_equal(resize_matrix(6, 6, mode), np.eye(6))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown interpolation mode 'nearest'"):
        resize_matrix(4, 8, "nearest")
    with pytest.raises(ValueError, match="sizes must be positive"):
        resize_matrix(0, 8, "bicubic")


def test_imports_no_framework():
    code = (
        "import sys\n"
        "for name in ('torch', 'tensorflow', 'keras', 'jax', 'flax'):\n"
        "    sys.modules[name] = None\n"
        "import zoo.interpolate, weight_convert.detectron2\n"
        "print(zoo.interpolate.resize_matrix(3, 5, 'bicubic').shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(5, 3)"

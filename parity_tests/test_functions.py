"""Pure tensor functions of each port against the reference functions, one to one."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import zoo.layers as ref


def _ns(port_name):
    return importlib.import_module(f"ports.{port_name}.layers")


@pytest.fixture
def as_numpy(port_name):
    if port_name == "keras":
        import keras

        return keras.ops.convert_to_numpy
    return np.asarray


@pytest.mark.parametrize(
    "shape,window",
    [
        ((2, 14, 21, 8), (7, 7)),
        ((1, 8, 12, 4), (4, 6)),
        ((2, 4, 14, 14, 6), (2, 7, 7)),
        ((1, 3, 6, 10, 4), (3, 2, 5)),
    ],
)
def test_window_partition_and_reverse(shape, window, port_name, as_numpy, rng):
    ns = _ns(port_name)
    x = rng.standard_normal(shape, dtype=np.float32)
    expected = ref.window_partition(torch.from_numpy(x), window).numpy()
    got = as_numpy(ns.window_partition(x, window))
    np.testing.assert_array_equal(got, expected)
    back = as_numpy(ns.window_reverse(got, window, shape[1:-1]))
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("hw,window", [((12, 9), 5), ((6, 10), 14), ((14, 14), 7)])
def test_window_partition_padded_and_unpartition(hw, window, port_name, as_numpy, rng):
    ns = _ns(port_name)
    x = rng.standard_normal((2, *hw, 4), dtype=np.float32)
    expected, pad_hw = ref.window_partition_padded(torch.from_numpy(x), window)
    got, got_pad = ns.window_partition_padded(x, window)
    assert tuple(got_pad) == tuple(pad_hw)
    np.testing.assert_array_equal(as_numpy(got), expected.numpy())
    np.testing.assert_array_equal(as_numpy(ns.window_unpartition(got, window, pad_hw, hw)), x)


@pytest.mark.parametrize("q,k,length", [(8, 8, 15), (9, 9, 11), (4, 4, 13), (6, 10, 19)])
def test_get_rel_pos(q, k, length, port_name, as_numpy, rng):
    ns = _ns(port_name)
    table = rng.standard_normal((length, 8), dtype=np.float32)
    expected = ref.get_rel_pos(q, k, torch.from_numpy(table)).numpy()
    np.testing.assert_allclose(as_numpy(ns.get_rel_pos(q, k, table)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("qs,ks", [((8, 8), (8, 8)), ((9, 7), (9, 7)), ((4, 6), (4, 6))])
def test_add_decomposed_rel_pos(qs, ks, port_name, as_numpy, rng):
    ns = _ns(port_name)
    b, dim = 3, 8
    q = rng.standard_normal((b, qs[0] * qs[1], dim), dtype=np.float32)
    attn = rng.standard_normal((b, qs[0] * qs[1], ks[0] * ks[1]), dtype=np.float32)
    rh = rng.standard_normal((2 * 6 - 1, dim), dtype=np.float32)
    rw = rng.standard_normal((2 * 7 - 1, dim), dtype=np.float32)
    t = torch.from_numpy
    expected = ref.add_decomposed_rel_pos(t(attn), t(q), t(rh), t(rw), qs, ks).numpy()
    got = as_numpy(ns.add_decomposed_rel_pos(attn, q, rh, rw, qs, ks))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)

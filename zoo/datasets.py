"""Bundled training data, framework-free (NumPy; scikit-learn for the arrays it ships).

``digits()``: scikit-learn's 1797 handwritten 8 x 8 digits (``load_digits``, read from the wheel,
no download) resized bilinearly to MNIST's 28 x 28 with constant matrices
(``zoo.interpolate``), scaled to [0, 1] and normalized as the MNIST examples normalize, split
into a fixed train and test set. ``batch_order`` is the seeded sequence of training batches.
The arrays and the order are the same in every framework (and on every machine: only exact
float64 arithmetic and one rounding to float32), so a training run differs between frameworks
by their arithmetic alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.families.convnet import MNIST_MEAN, MNIST_STD
from zoo.interpolate import resize_matrix

__all__ = ["Digits", "batch_order", "digits"]

#: the digits' pixel values are counts 0..16 (4 x 4 blocks of a 32 x 32 bitmap)
_DIGITS_MAX = 16.0


@dataclass(frozen=True)
class Digits:
    """Images channels-first (N, 1, size, size) float32, normalized; labels (N,) int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def digits(
    size: int = 28,
    test_size: int = 500,
    seed: int = 0,
    mean: float = MNIST_MEAN,
    std: float = MNIST_STD,
) -> Digits:
    """scikit-learn's digits at ``size`` x ``size`` (bilinear, ``align_corners=False``, as
    ``F.interpolate`` resizes), in [0, 1], then ``(x - mean) / std``; ``test_size`` images,
    drawn by a permutation seeded with ``seed``, form the test set, the rest the training set.
    Channels-first, as the reference takes them (``np.moveaxis(x, 1, -1)`` for the ports)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.asarray(data.images, dtype=np.float64) / _DIGITS_MAX
    m = resize_matrix(images.shape[1], size, "bilinear")
    resized = np.einsum("hi,nij,wj->nhw", m, images, m)
    x = ((resized - mean) / std).astype(np.float32)[:, None]
    y = np.asarray(data.target, dtype=np.int64)
    if not 0 < test_size < len(y):
        raise ValueError(f"test_size {test_size}: the digits are {len(y)} images")
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:test_size], order[test_size:]
    return Digits(x[train], y[train], x[test], y[test])


def batch_order(n: int, batch_size: int, steps: int, seed: int = 0) -> np.ndarray:
    """(steps, batch_size) indices into ``n`` training examples: each epoch a fresh permutation
    (one ``numpy`` generator seeded with ``seed``), cut into full batches (the remainder is
    dropped, so every step averages over ``batch_size``)."""
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"{n} examples make no batch of {batch_size}")
    rng = np.random.default_rng(seed)
    epochs = -(-steps // per_epoch)
    batches = [
        rng.permutation(n)[: per_epoch * batch_size].reshape(per_epoch, batch_size)
        for _ in range(epochs)
    ]
    return np.concatenate(batches)[:steps]

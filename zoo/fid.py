"""Fréchet Inception Distance and Inception Score, framework-free (NumPy / SciPy).

The features come from any framework's Inception-v3 (``create_model("inception_v3_fid",
features=["pool3", "logits"])`` in ``zoo.models``, ``ports.keras.models`` or
``ports.flax.models``: the same numbers to float32 rounding, so the same FID):

    mu_a, sigma_a = activation_statistics(pool3_a)     # (N, 2048) -> (2048,), (2048, 2048)
    d = frechet_distance(mu_a, sigma_a, mu_b, sigma_b)  # pytorch-fid's formula and numerics
    d = fid(pool3_a, pool3_b)                           # the two steps at once
    d = fid(pool3_a, pool3_b, method="svd")             # exact, fast: no D x D sqrtm
    mean, std = inception_score(logits, splits=10)

``frechet_distance`` is pytorch-fid 0.3.0's ``calculate_frechet_distance`` (Dougal
Sutherland's stable version): ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))`` with
``scipy.linalg.sqrtm``; when the product's square root is not finite (a singular product), eps
(1e-6) is added to both diagonals and the root taken again; an imaginary part of the root's
diagonal above 1e-3 is an error (``ValueError``), below it is dropped. Only the warning differs:
pytorch-fid prints it, this module warns (``RuntimeWarning``).

The Inception Score takes whatever logits it is given. The standard implementations differ:
OpenAI's original code (Salimans et al. 2016) and torch-fidelity's default use the FID Inception's
1008-way logits without the fc bias (``unbiased_logits(pool3, fc_weight)``); sbarratt's
``inception-score-pytorch`` uses torchvision's 1000-way logits with the bias. The split formula
is theirs: the samples in ``splits`` consecutive parts (part ``i`` is rows
``i * N // splits`` to ``(i + 1) * N // splits``), per part ``exp(mean_x KL(p(y|x) || p(y)))``
with ``p(y)`` the part's mean prediction, then the mean and standard deviation over the parts.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from scipy.special import log_softmax

__all__ = [
    "activation_statistics",
    "fid",
    "frechet_distance",
    "inception_score",
    "unbiased_logits",
]

#: added to both covariance diagonals when ``sqrtm`` of their product is not finite
#: (pytorch-fid's default)
SINGULAR_EPS = 1e-6
#: the largest imaginary part of the root's diagonal dropped as rounding (pytorch-fid's)
IMAGINARY_ATOL = 1e-3


def _features(features: np.ndarray, name: str = "features") -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name}: (N, D) with N >= 2 samples, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: floating-point values, got {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: not every value is finite")
    return x.astype(np.float64)


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> their mean (D,) and covariance (D, D) (unbiased: ``np.cov`` with
    ``rowvar=False``, as pytorch-fid), both in float64 (pytorch-fid takes the mean of its float32
    array in float32; the difference is float32 rounding)."""
    x = _features(features)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = SINGULAR_EPS,
) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid computes
    it (see the module docstring): ``|mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1
    sigma2))``. Raises ``ValueError`` for mismatched shapes or a root with an imaginary part
    above 1e-3 on its diagonal."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors of different lengths: {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            f"covariances {sigma1.shape} and {sigma2.shape} do not fit means {mu1.shape}"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: singular covariance product; adding {eps} to the diagonal of both",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_ATOL):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray, method: str = "sqrtm") -> float:
    """The FID of two feature sets (N_a, D) and (N_b, D) (the 2048-d ``pool3`` features).

    ``method="sqrtm"``: ``frechet_distance`` of their ``activation_statistics``, pytorch-fid's
    numerics (one ``scipy.linalg.sqrtm`` of a D x D product: ~13 s at D = 2048 on two cores).
    ``method="svd"``: the same quantity computed exactly from the centered features A, B:
    ``Tr(sqrtm(S_a S_b))`` is the sum of the singular values of ``A B^T / sqrt((N_a - 1)(N_b -
    1))`` (the nonzero eigenvalues of ``A^T A B^T B`` are those of ``(A B^T)(A B^T)^T``), an
    N_a x N_b matrix: milliseconds for a few thousand samples, and no ``sqrtm`` of a singular
    product (N < D), where pytorch-fid's root is only approximate: rounding in the product's
    null space adds ~1e-6 relative at 24 x 2048 ``pool3`` features (``test_fid.py`` and the
    GAN / FID notebook measure the two against each other)."""
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features of different widths: {a.shape[1]} and {b.shape[1]}")
    if method == "sqrtm":
        return frechet_distance(*activation_statistics(a), *activation_statistics(b))
    if method != "svd":
        raise ValueError(f"method: 'sqrtm' or 'svd', got {method!r}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ca, cb = a - mu_a, b - mu_b
    na, nb = a.shape[0] - 1, b.shape[0] - 1
    diff = mu_a - mu_b
    trace_root = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    traces = np.sum(ca * ca) / na + np.sum(cb * cb) / nb
    return float(diff.dot(diff) + traces - 2 * trace_root)


def unbiased_logits(pool3: np.ndarray, fc_weight: np.ndarray) -> np.ndarray:
    """(N, 2048) pool features x the FID Inception's fc weight (1008, 2048) transposed, without
    the bias: the logits OpenAI's Inception Score and torch-fidelity's ``logits_unbiased``
    take (float64)."""
    return _features(pool3, "pool3") @ np.asarray(fc_weight, dtype=np.float64).T


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """The Inception Score of (N, classes) logits: softmax (in float64), then per consecutive
    split ``exp(mean KL(p(y|x) || p(y)))``; returns (mean, std) over the splits (see the module
    docstring for which logits the standard implementations use). ``splits`` <= N."""
    x = _features(logits, "logits")
    n = x.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits: between 1 and the {n} samples, got {splits}")
    log_p = log_softmax(x, axis=1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        log_py = np.log(np.mean(np.exp(part), axis=0, keepdims=True))
        kl = np.sum(np.exp(part) * (part - log_py), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))

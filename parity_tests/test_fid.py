"""``zoo.fid`` (framework-free FID and Inception Score) against pytorch-fid's own
``calculate_frechet_distance`` and the standard split formula of the Inception Score."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from zoo import fid as zfid

#: FID vs pytorch-fid: relative (the same float64 formula and sqrtm: in fact ~1e-15)
FID_RTOL = 1e-9


def _pytorch_fid(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's statistics (its ``calculate_activation_statistics`` computes ``np.mean`` /
    ``np.cov(rowvar=False)`` of the activations) and its ``calculate_frechet_distance``."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    stats = [(np.mean(x, axis=0), np.cov(x, rowvar=False)) for x in (a, b)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its sqrtm(disp=False) call
        return float(calculate_frechet_distance(*stats[0], *stats[1]))


def _features(rng, n: int, d: int, shift: float = 0.0, rank: int | None = None) -> np.ndarray:
    """(n, d) float64 correlated features, of rank ``rank`` when given (a singular covariance)."""
    basis = rng.standard_normal((rank or d, d))
    return rng.standard_normal((n, rank or d)) @ basis / np.sqrt(d) + shift


@pytest.mark.parametrize(
    ("n", "d", "rank"),
    [(300, 64, None), (40, 64, None), (200, 64, 20)],
    ids=["full-rank", "fewer-samples-than-dims", "rank-20"],
)
def test_fid_is_pytorch_fids(n, d, rank):
    """``fid`` of two random feature sets equals pytorch-fid's to 1e-9 relative: full-rank
    covariances, covariances of rank N - 1 < D (fewer samples than dimensions, as 128 photos of
    2048-d features) and of rank 20 (both singular: the product's root has a null space). A
    planted bug (the root's trace halved) is caught."""
    rng = np.random.default_rng(n + d)
    a = _features(rng, n, d, rank=rank)
    b = _features(rng, n, d, shift=0.3, rank=rank)
    want = _pytorch_fid(a, b)
    got = zfid.fid(a, b)
    assert want > 0 and abs(got - want) <= FID_RTOL * abs(want), (got, want)
    mu1, s1 = zfid.activation_statistics(a)
    mu2, s2 = zfid.activation_statistics(b)
    planted = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2))
    planted -= np.trace(np.real(__import__("scipy").linalg.sqrtm(s1 @ s2)))
    assert abs(planted - want) > 1e-3 * abs(want)


def test_singular_product_takes_the_eps_offset(monkeypatch):
    """When sqrtm of the product is not finite, both pytorch-fid and ``frechet_distance`` add
    1e-6 to the diagonals and take the root again (the same value, to 1e-9 relative); ours
    warns. (A zero covariance against itself gives a finite root: non-finite is planted by a
    sqrtm that returns NaN on its first call, in both.)"""
    from pytorch_fid import fid_score
    from scipy import linalg

    rng = np.random.default_rng(5)
    a, b = _features(rng, 30, 16), _features(rng, 30, 16, shift=1.0)
    (mu1, s1), (mu2, s2) = zfid.activation_statistics(a), zfid.activation_statistics(b)
    real = linalg.sqrtm
    calls = []

    def first_nan(m, *args, **kwargs):
        calls.append(1)
        out = real(m)
        if len(calls) % 2 == 1:
            out = np.full_like(out, np.nan)
        return (out, 0.0) if kwargs.get("disp") is False else out

    monkeypatch.setattr(linalg, "sqrtm", first_nan)
    monkeypatch.setattr(fid_score.linalg, "sqrtm", first_nan)
    with pytest.warns(RuntimeWarning, match="singular covariance product; adding 1e-06"):
        got = zfid.frechet_distance(mu1, s1, mu2, s2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        want = float(fid_score.calculate_frechet_distance(mu1, s1, mu2, s2))
    assert len(calls) == 4
    offset = np.eye(16) * 1e-6
    direct = float(
        np.sum((mu1 - mu2) ** 2)
        + np.trace(s1)
        + np.trace(s2)
        - 2 * np.trace(np.real(real((s1 + offset) @ (s2 + offset))))
    )
    assert abs(got - want) <= FID_RTOL * abs(want) and abs(got - direct) <= 1e-12 * abs(direct)


def test_imaginary_root_is_refused():
    """A product whose root has an imaginary diagonal (negative eigenvalues: here the
    covariances are -I and I) raises ``ValueError`` as pytorch-fid does; a tiny imaginary part is
    dropped (identity covariances: FID = |mu1 - mu2|^2 exactly)."""
    eye = np.eye(4)
    with pytest.raises(ValueError, match="imaginary component"):
        zfid.frechet_distance(np.zeros(4), -eye, np.zeros(4), eye)
    assert zfid.frechet_distance(np.zeros(4), eye, np.ones(4), eye) == pytest.approx(4.0, abs=1e-12)


def test_fid_refuses_bad_features():
    with pytest.raises(ValueError, match=r"features_a: \(N, D\) with N >= 2"):
        zfid.fid(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="different widths: 4 and 5"):
        zfid.fid(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="not every value is finite"):
        zfid.fid(np.full((3, 4), np.nan), np.zeros((3, 4)))


def _openai_inception_score(preds: np.ndarray, splits: int) -> tuple[float, float]:
    """OpenAI improved-gan ``inception_score.py``'s loop on softmax predictions (float64)."""
    scores = []
    for i in range(splits):
        part = preds[(i * preds.shape[0] // splits) : ((i + 1) * preds.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score():
    """``inception_score`` equals OpenAI's loop on the softmax of the logits (1e-12 relative,
    1008 classes, 250 samples, 10 splits of 25); one-hot-like confident predictions spread
    evenly over K classes per split score K, identical ones score 1."""
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((250, 1008)) * 3).astype(np.float32)
    p = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
    want = _openai_inception_score(p / p.sum(1, keepdims=True), 10)
    got = zfid.inception_score(logits, splits=10)
    assert np.allclose(got, want, rtol=1e-12, atol=0)
    confident = np.tile(np.eye(8) * 60.0, (4, 1))  # 32 samples, each split of 8 covers 8 classes
    mean, std = zfid.inception_score(confident, splits=4)
    assert mean == pytest.approx(8.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    assert zfid.inception_score(np.ones((10, 5)), splits=2) == pytest.approx((1.0, 0.0))
    with pytest.raises(ValueError, match="splits: between 1 and the 10 samples"):
        zfid.inception_score(np.ones((10, 5)), splits=11)


def test_unbiased_logits():
    """pool3 @ fc.weight.T without the bias (OpenAI's / torch-fidelity's IS input)."""
    rng = np.random.default_rng(1)
    pool3, w = rng.random((3, 6), dtype=np.float32), rng.standard_normal((4, 6))
    assert np.allclose(zfid.unbiased_logits(pool3, w), pool3.astype(np.float64) @ w.T, rtol=1e-15)


@pytest.mark.parametrize(
    ("n", "d", "rank", "rtol"),
    [(300, 64, None, 1e-12), (40, 64, None, 1e-6), (200, 64, 20, 1e-6)],
    ids=["full-rank", "fewer-samples-than-dims", "rank-20"],
)
def test_svd_method_is_the_same_distance(n, d, rank, rtol):
    """``fid(..., method="svd")`` (the root's trace as the nuclear norm of the centered
    features' cross product) equals pytorch-fid's sqrtm value: to 1e-12 relative with full-rank
    covariances (measured 1.6e-14), to 1e-6 with singular ones, where sqrtm of the singular
    product is itself approximate (measured 2e-8; at 24 x 2048, 1.3e-7, in 1 ms instead of
    14 s). Planted: the 1/N normalization in place of 1/(N - 1) is caught."""
    rng = np.random.default_rng(n + d)
    a = _features(rng, n, d, rank=rank)
    b = _features(rng, n, d, shift=0.3, rank=rank)
    want = _pytorch_fid(a, b)
    got = zfid.fid(a, b, method="svd")
    assert abs(got - want) <= rtol * abs(want), (got, want)
    ca, cb = a - a.mean(0), b - b.mean(0)
    planted = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum(ca**2) / n + np.sum(cb**2) / n
    planted -= 2 * np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / n
    assert abs(planted - want) > 1e-3 * abs(want)
    with pytest.raises(ValueError, match="method"):
        zfid.fid(a, b, method="eigh")

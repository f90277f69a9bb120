"""Metrics of the ShapeWorld protocol (specs/shapeworld.md, "Metrics") as pure functions."""

from __future__ import annotations

import numpy as np


def mean_or_none(values: np.ndarray) -> float | None:
    """Mean of the non-NaN values; None when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


def harmonic_mean(acc_e: float, acc_s: float) -> float:
    """H of MACE / CPE: harmonic mean of erasure (1 - Acc_e) and preservation (Acc_s)."""
    erase = 1.0 - acc_e
    return 0.0 if erase + acc_s == 0 else 2 * erase * acc_s / (erase + acc_s)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples), never negative.

    Computed from the centred samples Xa, Xb themselves, no matrix square root: tr sqrt(Σa Σb) is the nuclear
    norm of Xa Xbᵀ / sqrt((n-1)(m-1)), exact when a covariance is singular (fewer images than feature
    dimensions, e.g. two images), so a small prompt set gives the exact distance of its fitted Gaussians, with no
    warning. Rounding that would read just below zero (identical sets) reads 0; NaN when a feature is non-finite."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Fréchet distance needs at least two samples per set")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    x, y = a - a.mean(0), b - b.mean(0)
    spread_a, spread_b = (x**2).sum() / (len(a) - 1), (y**2).sum() / (len(b) - 1)
    mean_gap = ((a.mean(0) - b.mean(0)) ** 2).sum()
    return float(max(0.0, mean_gap + spread_a + spread_b - 2 * trace_sqrt_product(x, y)))


def trace_sqrt_product(x: np.ndarray, y: np.ndarray) -> float:
    """tr sqrt(Σx Σy) of the sample covariances of centred samples ``x`` (n, d) and ``y`` (m, d): the eigenvalues
    of Σx Σy are the squared singular values of x yᵀ / sqrt((n-1)(m-1)); the thin QR factors keep that product
    at most d x d."""
    rx, ry = np.linalg.qr(x, mode="r"), np.linalg.qr(y, mode="r")
    return float(np.linalg.svd(rx @ ry.T, compute_uv=False).sum() / np.sqrt((len(x) - 1) * (len(y) - 1)))


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 20, subset_size: int = 200, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least two samples per set")
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(mmd - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def fidelity(original: np.ndarray, edited: np.ndarray) -> float:
    """Mean absolute pixel difference in [0, 1] between paired uint8 images (0 = untouched)."""
    if original.shape != edited.shape:
        raise ValueError(f"image sets differ in shape: {original.shape} vs {edited.shape}")
    return float(np.abs(original.astype(np.float32) - edited.astype(np.float32)).mean() / 255.0)

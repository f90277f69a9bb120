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
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Fréchet distance needs at least two samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt_product(cov_a, cov_b))


def trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """tr sqrt(A B) for covariances A, B: the square roots of the eigenvalues of A^½ B A^½, which has the same
    spectrum, symmetric, so it holds for singular covariances (fewer images than feature dimensions) too."""
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    return float(np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)).sum())


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

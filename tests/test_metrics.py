import numpy as np
import pytest

from erasekit.eval.metrics import fidelity, frechet_distance, harmonic_mean, kernel_inception_distance


def test_harmonic_mean_matches_definition():
    assert harmonic_mean(0.0, 1.0) == 1.0
    assert harmonic_mean(1.0, 1.0) == 0.0
    assert harmonic_mean(0.2, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)


def test_frechet_distance_is_zero_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 8))
    b = rng.standard_normal((4000, 8))
    assert frechet_distance(a, b) < 0.05
    # Shift every dimension by 1: the mean term alone is 8.
    assert frechet_distance(a, b + 1.0) == pytest.approx(8.0, abs=0.2)


def test_kid_is_near_zero_for_same_distribution_and_positive_otherwise():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
    same, _ = kernel_inception_distance(a, b)
    shifted, _ = kernel_inception_distance(a, b + 0.5)
    assert abs(same) < 0.01 < shifted


def test_fidelity():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    assert fidelity(a, a) == 0.0
    assert fidelity(a, a + 255) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fidelity(a, a[:1])


def test_trace_sqrt_product_matches_scipy_and_stays_quiet_on_singular_covariances():
    import warnings

    from scipy import linalg

    from erasekit.eval.metrics import trace_sqrt_product

    rng = np.random.default_rng(0)
    a, b = np.cov(rng.normal(size=(300, 6)), rowvar=False), np.cov(rng.normal(size=(200, 6)) * 3, rowvar=False)
    assert trace_sqrt_product(a, b) == pytest.approx(np.trace(linalg.sqrtm(a @ b)).real, rel=1e-9)
    few_a, few_b = (np.cov(rng.normal(size=(5, 32)), rowvar=False) for _ in range(2))  # rank 4 in 32 dimensions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = trace_sqrt_product(few_a, few_b)
    assert np.isfinite(value) and value >= 0

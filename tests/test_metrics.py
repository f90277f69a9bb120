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


def test_trace_sqrt_product_matches_scipy():
    from scipy import linalg

    from erasekit.eval.metrics import trace_sqrt_product

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(200, 6)) * 3
    a, b = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = np.trace(linalg.sqrtm(a @ b)).real
    assert trace_sqrt_product(x - x.mean(0), y - y.mean(0)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dims", [4, 64, 512])
def test_frechet_distance_of_two_images_is_exact_never_negative_and_quiet(capfd, dims):
    """Two samples per set: rank-one covariances delta delta^T / 2, so tr sqrt(A B) = |delta_a . delta_b| / 2 and
    the distance has a closed form; identical sets give 0 up to rounding, never below it; nothing is printed."""
    import warnings

    rng = np.random.default_rng(dims)
    a, b = rng.normal(size=(2, dims)), rng.normal(size=(2, dims)) + 0.5
    da, db = a[0] - a[1], b[0] - b[1]
    mean_gap = ((a.mean(0) - b.mean(0)) ** 2).sum()
    expected = mean_gap + (da @ da) / 2 + (db @ db) / 2 - abs(da @ db)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distance, same, scaled = (
            frechet_distance(a, b),
            frechet_distance(a, a.copy()),
            frechet_distance(a * 1e6, a * 1e6),
        )
    assert caught == [] and capfd.readouterr() == ("", "")
    assert distance == pytest.approx(expected, rel=1e-9)
    assert 0.0 <= same < 1e-12 and 0.0 <= scaled < 1e-12 * ((a * 1e6) ** 2).sum()  # rounding, relative


def test_frechet_distance_of_non_finite_features_is_nan():
    a = np.ones((3, 4))
    a[0, 0] = np.nan
    assert np.isnan(frechet_distance(a, np.ones((3, 4))))

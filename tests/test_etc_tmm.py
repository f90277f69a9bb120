"""ETC concept distributions (specs/etc.md §1–§2): PCA, Student-t mixture EM, sampling and HPD bands."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from erasekit.methods.etc.tmm import (
    ConceptDistribution,
    TMixture,
    fit_pca,
    fit_tmm,
    hpd_threshold,
    off_plane,
    sample_band,
    sample_spread,
    sample_tmm,
    standard_gamma,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixture(weights, means, variances, dof: float) -> TMixture:
    t = lambda v: torch.tensor(v, dtype=F64)  # noqa: E731
    return TMixture(t(weights), t(means), t(variances), dof)


# Three well separated components in k=2, two concepts (the second a shifted, re-weighted copy).
TRUE = mixture(
    [[0.5, 0.3, 0.2], [0.2, 0.4, 0.4]],
    [[[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]], [[-5.0, 1.0], [3.0, 3.0], [-5.0, 9.0]]],
    [[[1.0, 0.5], [0.5, 2.0], [1.5, 1.0]], [[0.7, 1.2], [1.0, 1.0], [2.0, 0.6]]],
    2.0,
)


def synthetic(c: int = 3, n: int = 600, k: int = 3, seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    scale = torch.tensor([1.0, 2.0, 0.5])[:k]
    shift = (torch.rand(c, n, 1, generator=g) > 0.6) * 4.0
    return (torch.randn(c, n, k, generator=g) * scale + shift).to(F64)


def test_em_log_likelihood_never_decreases():
    _, report = fit_tmm(synthetic(), components=4, max_iter=80, tol=-math.inf, generator=gen(1))
    history = torch.stack(report.history)  # (iterations + 1, C)
    assert report.iterations == 80 and history.shape == (81, 3)
    assert torch.isfinite(history).all()
    assert (history[1:] - history[:-1] >= -1e-9 * history[:-1].abs()).all()
    assert (history[-1] > history[0] + 0.1).all()  # and it actually improved


def test_em_recovers_t_mixture_parameters():
    # Random-point init can put two means in one cluster (EM then stalls in a local optimum): seed 2 starts
    # well for both concepts (about 3 seeds in 4 do for each).
    z = sample_tmm(TRUE, 8000, gen(0))
    fit, report = fit_tmm(z, components=3, dof=2.0, generator=gen(2))
    assert report.converged.all()
    for c in range(2):
        match = torch.cdist(TRUE.means[c], fit.means[c]).argmin(1)  # nearest fitted component per true one
        assert sorted(match.tolist()) == [0, 1, 2]
        torch.testing.assert_close(fit.means[c, match], TRUE.means[c], atol=0.15, rtol=0)
        torch.testing.assert_close(fit.weights[c, match], TRUE.weights[c], atol=0.05, rtol=0)
        torch.testing.assert_close(fit.variances[c, match], TRUE.variances[c], rtol=0.2, atol=0)


def test_log_prob_matches_scipy_univariate_t():
    mix = mixture([[1.0]], [[[0.7]]], [[[2.5]]], 3.0)
    z = torch.linspace(-20, 20, 41, dtype=F64)[None, :, None]
    expected = stats.t.logpdf(z[0, :, 0].numpy(), df=3.0, loc=0.7, scale=math.sqrt(2.5))
    np.testing.assert_allclose(mix.log_prob(z)[0].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_log_prob_matches_scipy_multivariate_t_mixture():
    mix = mixture([[0.3, 0.7]], [[[0.0, 1.0], [3.0, -2.0]]], [[[1.0, 4.0], [0.25, 2.0]]], 2.0)
    z = torch.randn(1, 50, 2, generator=gen(0), dtype=F64) * 3
    parts = np.stack(
        [
            math.log(mix.weights[0, j].item())
            + stats.multivariate_t.logpdf(
                z[0].numpy(), loc=mix.means[0, j].numpy(), shape=np.diag(mix.variances[0, j]), df=2.0
            )
            for j in range(2)
        ],
        -1,
    )
    np.testing.assert_allclose(mix.component_log_prob(z)[0].numpy(), parts, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(mix.log_prob(z)[0].numpy(), logsumexp(parts, -1), rtol=1e-10, atol=1e-10)


def test_pca_basis_orthonormal_and_lift_inverts_project_on_a_subspace():
    g = gen(0)
    c, n, d, k = 2, 50, 10, 3
    offset, span = torch.randn(c, 1, d, generator=g, dtype=F64), torch.randn(c, k, d, generator=g, dtype=F64)
    x = offset + torch.randn(c, n, k, generator=g, dtype=F64) @ span  # data in a k-dim affine subspace
    pca = fit_pca(x, k)
    assert pca.basis.shape == (c, d, k) and pca.mean.shape == (c, d)
    torch.testing.assert_close(pca.basis.transpose(1, 2) @ pca.basis, torch.eye(k, dtype=F64).expand(c, k, k))
    torch.testing.assert_close(pca.lift(pca.project(x)), x, atol=1e-10, rtol=0)
    z = pca.project(x)
    torch.testing.assert_close(z.mean(1), torch.zeros(c, k, dtype=F64), atol=1e-10, rtol=0)
    assert (z.var(1)[:, :-1] >= z.var(1)[:, 1:]).all()  # components by decreasing variance


def reference_em_step(z: np.ndarray, mix: TMixture, ridge: float) -> tuple[np.ndarray, ...]:
    """One EM step of specs/etc.md §1 for a single concept, written out per component with scipy."""
    n, d = z.shape
    nu = mix.dof
    log_pk = []
    for j in range(mix.weights.shape[1]):
        mu, var = mix.means[0, j].numpy(), mix.variances[0, j].numpy()
        log_pk.append(math.log(mix.weights[0, j]) + stats.multivariate_t.logpdf(z, mu, np.diag(var), df=nu))
    log_pk = np.stack(log_pk, -1)
    r = np.exp(log_pk - logsumexp(log_pk, -1, keepdims=True))
    weights, means, variances = [], [], []
    for j in range(r.shape[1]):
        delta = (((z - mix.means[0, j].numpy()) ** 2) / mix.variances[0, j].numpy()).sum(-1)
        ru = r[:, j] * (nu + d) / (nu + delta)
        mu = (ru[:, None] * z).sum(0) / ru.sum()
        weights.append(r[:, j].sum() / n)
        means.append(mu)
        variances.append((ru[:, None] * (z - mu) ** 2).sum(0) / r[:, j].sum() + ridge)
    return np.array(weights), np.stack(means), np.stack(variances)


def test_one_em_step_matches_a_reference_implementation():
    z = synthetic(c=1, n=200)
    start, _ = fit_tmm(z, components=3, max_iter=0, ridge=1e-3, generator=gen(4))
    step, report = fit_tmm(z, components=3, max_iter=1, tol=-math.inf, ridge=1e-3, generator=gen(4))
    assert report.iterations == 1
    weights, means, variances = reference_em_step(z[0].numpy(), start, ridge=1e-3)
    np.testing.assert_allclose(step.weights[0].numpy(), weights, rtol=1e-9)
    np.testing.assert_allclose(step.means[0].numpy(), means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(step.variances[0].numpy(), variances, rtol=1e-9)


def test_init_means_are_distinct_data_points_shared_across_concepts():
    z = torch.randn(2, 5, 2, generator=gen(0), dtype=F64)
    for seed in range(10):
        init, report = fit_tmm(z, components=5, max_iter=0, generator=gen(seed))
        assert report.iterations == 0 and len(report.history) == 1
        pick = torch.cdist(init.means, z).argmin(-1)  # (C, K) data index of each initial mean
        torch.testing.assert_close(init.means, torch.stack([z[c, pick[c]] for c in range(2)]), atol=0, rtol=0)
        assert sorted(pick[0].tolist()) == list(range(5)) and torch.equal(pick[0], pick[1])
        torch.testing.assert_close(init.weights, torch.full((2, 5), 0.2, dtype=F64))
        torch.testing.assert_close(init.variances, (z.var(1, unbiased=False) + 1e-6)[:, None].expand(2, 5, 2))


def test_batched_fit_equals_fitting_each_concept_alone():
    z = synthetic()
    batch, batch_report = fit_tmm(z, components=4, generator=gen(1))
    assert len(set(batch_report.steps.tolist())) > 1  # concepts stop at different iterations
    for c in range(z.shape[0]):
        alone, alone_report = fit_tmm(z[c : c + 1], components=4, generator=gen(1))
        for name in ("weights", "means", "variances"):
            torch.testing.assert_close(getattr(alone, name)[0], getattr(batch, name)[c], atol=1e-8, rtol=0)
        torch.testing.assert_close(alone_report.log_likelihood[0], batch_report.log_likelihood[c], atol=1e-8, rtol=0)
    copies, _ = fit_tmm(z[:1].expand(2, -1, -1), components=4, generator=gen(1))
    for name in ("weights", "means", "variances"):
        assert torch.equal(getattr(copies, name)[0], getattr(copies, name)[1])


def test_hpd_threshold_has_the_stated_coverage():
    threshold = hpd_threshold(TRUE, 0.9, n_mc=20_000, generator=gen(0))
    fresh = TRUE.log_prob(sample_tmm(TRUE, 20_000, gen(1)))
    coverage = (fresh >= threshold[:, None]).double().mean(1)
    assert ((coverage - 0.9).abs() < 0.02).all(), coverage


def nearest_mahalanobis(mix: TMixture, z: torch.Tensor) -> torch.Tensor:
    delta = ((z[:, :, None] - mix.means[:, None]).square() / mix.variances[:, None]).sum(-1)
    return delta.min(-1).values.sqrt()


def test_core_and_shell_bands():
    n, n_mc = 500, 5000
    t_in = hpd_threshold(TRUE, 0.9, n_mc, gen(3))  # sample_band draws its thresholds first from the generator
    t_out = hpd_threshold(TRUE, 0.8, n_mc, gen(4))
    core = sample_band(TRUE, n, gen(3), inside=0.9, n_mc=n_mc)
    shell = sample_band(TRUE, n, gen(4), outside=0.8, n_mc=n_mc)
    assert core.shape == shell.shape == (2, n, 2)
    assert (TRUE.log_prob(core) >= t_in[:, None]).all()
    assert (TRUE.log_prob(shell) < t_out[:, None]).all()
    assert (nearest_mahalanobis(TRUE, shell).mean(1) > nearest_mahalanobis(TRUE, core).mean(1)).all()
    band = sample_band(TRUE, 100, gen(5), inside=0.9, outside=0.8, n_mc=n_mc)
    log_p = TRUE.log_prob(band)
    assert (log_p >= hpd_threshold(TRUE, 0.9, n_mc, gen(5))[:, None]).all()
    with pytest.raises(ValueError, match="empty band"):
        sample_band(TRUE, 10, gen(0), inside=0.8, outside=0.9)
    with pytest.raises(RuntimeError, match=r"concept\(s\) \[0, 1\]"):
        sample_band(TRUE, 200, gen(0), inside=0.9, outside=0.89, max_rounds=1, n_mc=n_mc)


def test_sample_tmm_reproducible_and_t_covariance():
    assert torch.equal(sample_tmm(TRUE, 100, gen(7)), sample_tmm(TRUE, 100, gen(7)))
    assert not torch.equal(sample_tmm(TRUE, 100, gen(7)), sample_tmm(TRUE, 100, gen(8)))
    one = mixture([[1.0]], [[[1.0, -2.0]]], [[[2.0, 0.5]]], 5.0)
    z = sample_tmm(one, 100_000, gen(0))[0]
    expected = torch.diag(one.variances[0, 0]) * 5.0 / 3.0  # ν/(ν − 2) Σ
    cov = torch.cov(z.T)
    torch.testing.assert_close(cov.diagonal(), expected.diagonal(), rtol=0.1, atol=0)
    assert abs(cov[0, 1]) < 0.1 * math.sqrt(expected[0, 0] * expected[1, 1])
    torch.testing.assert_close(z.mean(0), one.means[0, 0], atol=0.03, rtol=0)


@pytest.mark.parametrize("shape", [0.5, 1.0, 2.5])
def test_standard_gamma_distribution(shape: float):
    x = standard_gamma(shape, (20_000,), gen(0))
    assert torch.equal(x, standard_gamma(shape, (20_000,), gen(0)))
    assert (x > 0).all()
    assert stats.kstest(x.numpy(), stats.gamma(shape).cdf).pvalue > 1e-3


def test_concept_distribution_samples_and_lifted_components():
    g = gen(0)
    c, n, d, k = 2, 300, 12, 2
    x = torch.randn(c, 1, d, generator=g) + torch.randn(c, n, k, generator=g) @ torch.randn(c, k, d, generator=g)
    dist = ConceptDistribution.fit(x, k=k, components=2, generator=gen(1))
    assert dist.report is not None and dist.mixture.means.shape == (c, 2, k)
    core = dist.sample_core(64, gen(2), n_mc=4000)
    shell = dist.sample_shell(64, gen(3), n_mc=4000)
    assert core.shape == shell.shape == (c, 64, d)
    torch.testing.assert_close(dist.pca.lift(dist.pca.project(core)), core)  # samples live in the PCA subspace
    means, covariances = dist.lifted_components()
    assert means.shape == (c, 2, d) and covariances.shape == (c, 2, d, d)
    w = dist.pca.basis[:, None]
    torch.testing.assert_close(dist.pca.project(means), dist.mixture.means)
    torch.testing.assert_close(w.transpose(-1, -2) @ covariances @ w, torch.diag_embed(dist.mixture.variances))
    one = dist.select(slice(1, 2))
    torch.testing.assert_close(one.lifted_components()[0], means[1:])


def test_bad_input():
    with pytest.raises(ValueError, match="k=11"):
        fit_pca(torch.randn(2, 20, 10), 11)
    with pytest.raises(ValueError, match="components"):
        fit_tmm(torch.randn(2, 3, 2), components=4)


def test_off_plane_anchors_leave_the_pca_plane_by_the_stated_radius():
    x = torch.randn(3, 200, 12, generator=gen(0), dtype=torch.float64)
    x[..., 4:] *= 1e-3  # each concept varies in a 4-dim plane
    pca = fit_pca(x, 4)
    points = pca.lift(pca.project(x[:, :50]))
    scale = sample_spread(x)
    moved = off_plane(pca, points, scale, (0.3, 0.8), gen(1))
    offset = moved - points
    assert (offset @ pca.basis).abs().max() < 1e-10  # orthogonal to the plane
    ratio = offset.norm(dim=-1) / scale[:, None]
    assert ratio.min() >= 0.3 - 1e-9 and ratio.max() <= 0.8 + 1e-9 and ratio.std() > 0.05
    assert torch.equal(moved, off_plane(pca, points, scale, (0.3, 0.8), gen(1)))  # seeded
    with pytest.raises(ValueError, match="radius"):
        off_plane(pca, points, scale, (0.8, 0.3))


def test_sample_spread_is_the_median_distance_from_the_mean():
    x = torch.zeros(1, 5, 2, dtype=torch.float64)
    x[0, :, 0] = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert float(sample_spread(x)[0]) == 1.0

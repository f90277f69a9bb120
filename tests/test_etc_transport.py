"""Affine optimal transport between Gaussian mixtures (specs/etc.md §3), without any model."""

import itertools
import math

import pytest
import torch

from erasekit.methods.etc.transport import (
    AffineTransport,
    bures_cost,
    gaussian_map,
    inv_sqrtm_psd,
    merge_triplet,
    mixture_transport,
    sinkhorn,
    sqrtm_psd,
)

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def spd(d: int, g: torch.Generator, batch: tuple[int, ...] = ()) -> torch.Tensor:
    b = torch.randn(*batch, d, d, generator=g, dtype=F64)
    return b @ b.mT / d + 0.3 * torch.eye(d, dtype=F64)


def orthonormal(d: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64))[0]


def sample(mean: torch.Tensor, cov: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    return mean + torch.randn(n, len(mean), generator=g, dtype=F64) @ torch.linalg.cholesky(cov).T


def sample_mixture(weights, means, covs, n: int, g: torch.Generator) -> torch.Tensor:
    counts = [round(float(w) * n) for w in weights]
    return torch.cat([sample(m, c, k, g) for m, c, k in zip(means, covs, counts, strict=True)])


def sliced_w2(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, directions: int = 64) -> float:
    """Sliced 2-Wasserstein distance between equal-size samples (sorted 1-D projections)."""
    theta = torch.nn.functional.normalize(torch.randn(directions, x.shape[1], generator=g, dtype=F64), dim=1)
    px, py = (x @ theta.T).sort(0).values, (y @ theta.T).sort(0).values
    return float((px - py).pow(2).mean().sqrt())


def test_sqrtm_and_inverse_sqrtm_are_batched_and_exact():
    g = torch.Generator().manual_seed(0)
    s = spd(5, g, (3, 2))
    root, inv = sqrtm_psd(s), inv_sqrtm_psd(s)
    eye = torch.eye(5, dtype=F64)
    assert root.shape == inv.shape == (3, 2, 5, 5)
    assert torch.allclose(root @ root, s, atol=1e-12)
    assert torch.allclose(root @ inv, eye.expand_as(s), atol=1e-10)
    assert torch.allclose(root, root.mT, atol=1e-14)
    # eigenvalues below the floor are raised to it: a zero matrix has root sqrt(floor) I
    assert torch.allclose(sqrtm_psd(torch.zeros(3, 3, dtype=F64), floor=1e-4), 1e-2 * torch.eye(3, dtype=F64))


def test_one_component_map_pushes_gaussian_exactly_onto_target():
    g = torch.Generator().manual_seed(1)
    d = 6
    m1, m2 = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    s1, s2 = spd(d, g), spd(d, g)
    a, b = gaussian_map(m1, s1, m2, s2)
    assert (a @ s1 @ a.T - s2).abs().max() < 1e-8
    assert torch.allclose(a, a.T, atol=1e-12)
    assert torch.linalg.eigvalsh(a).min() > 0  # PSD (positive definite for full-rank S1, S2)
    assert torch.allclose(a @ m1 + b, m2, atol=1e-12)  # T(m1) = m2
    # empirically: 20k samples of N(m1, S1) land on N(m2, S2) within sampling tolerance
    y = sample(m1, s1, 20_000, g) @ a.T + b
    n = len(y)
    assert (y.mean(0) - m2).abs().max() < 5 * math.sqrt(float(s2.diagonal().max()) / n)
    assert torch.linalg.matrix_norm(torch.cov(y.T) - s2) / torch.linalg.matrix_norm(s2) < 0.05


def test_gaussian_map_is_batched():
    g = torch.Generator().manual_seed(2)
    m1, m2 = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    s1, s2 = spd(3, g, (4,)), spd(3, g, (4,))
    a, b = gaussian_map(m1, s1, m2, s2)
    for i in range(4):
        ai, bi = gaussian_map(m1[i], s1[i], m2[i], s2[i])
        assert torch.allclose(a[i], ai, atol=1e-12) and torch.allclose(b[i], bi, atol=1e-12)
    assert (a @ s1 @ a.mT - s2).abs().max() < 1e-8


def test_bures_cost_zero_on_itself_symmetric_and_closed_form_for_diagonal():
    g = torch.Generator().manual_seed(3)
    d = 5
    m = torch.randn(4, d, generator=g, dtype=F64)
    s = spd(d, g, (4,))
    cost = bures_cost(m, s, m, s)
    assert cost.shape == (4, 4)
    assert cost.diagonal().abs().max() < 1e-10
    assert torch.allclose(cost, cost.T, atol=1e-9)
    assert (cost + torch.eye(4, dtype=F64)).min() > 0  # distinct Gaussians are at positive distance
    # pairwise (K, L) against single pairs
    other_m, other_s = torch.randn(3, d, generator=g, dtype=F64), spd(d, g, (3,))
    pairwise = bures_cost(m, s, other_m, other_s)
    assert pairwise.shape == (4, 3)
    assert torch.allclose(pairwise[2, 1], bures_cost(m[2], s[2], other_m[1], other_s[1]), atol=1e-12)
    # commuting (diagonal) covariances: ||m1 - m2||² + Σ (√s1 - √s2)²
    v1, v2 = torch.rand(d, generator=g, dtype=F64) + 0.1, torch.rand(d, generator=g, dtype=F64) + 0.1
    expected = (m[0] - m[1]).pow(2).sum() + (v1.sqrt() - v2.sqrt()).pow(2).sum()
    assert torch.allclose(bures_cost(m[0], torch.diag(v1), m[1], torch.diag(v2)), expected, atol=1e-12)


def test_sinkhorn_marginals_match():
    g = torch.Generator().manual_seed(4)
    a = torch.rand(5, generator=g, dtype=F64) + 0.1
    b = torch.rand(7, generator=g, dtype=F64) + 0.1
    a, b = a / a.sum(), b / b.sum()
    plan = sinkhorn(a, b, torch.rand(5, 7, generator=g, dtype=F64) * 10)
    assert plan.shape == (5, 7) and plan.min() >= 0
    assert torch.allclose(plan.sum(1), a, atol=1e-8)
    assert torch.allclose(plan.sum(0), b, atol=1e-8)


def test_sinkhorn_with_tiny_epsilon_concentrates_on_the_permutation():
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(6, generator=g)
    p = torch.eye(6, dtype=F64)[perm]
    cost = 1.0 - p + 0.1 * torch.rand(6, 6, generator=g, dtype=F64)
    uniform = torch.full((6,), 1 / 6, dtype=F64)
    plan = sinkhorn(uniform, uniform, cost, epsilon=0.01, iters=2000)
    assert (plan * p).sum() > 0.999
    assert torch.equal(plan.argmax(1), perm)
    # default epsilon with a zero median cost still gives a valid plan
    flat = sinkhorn(uniform, uniform, torch.zeros(6, 6, dtype=F64))
    assert torch.allclose(flat, torch.full((6, 6), 1 / 36, dtype=F64), atol=1e-12)


def three_component_mixtures(g: torch.Generator, shift: float):
    """Equal-weight 3-component mixtures in R^3; the target's means are the source's, permuted, moved by
    (1, -1, 0.5) and by ``shift`` along (1, 1, 1)."""
    weights = torch.full((3,), 1 / 3, dtype=F64)
    src_means = 6.0 * torch.eye(3, dtype=F64)
    tgt_means = src_means[[2, 0, 1]] + torch.tensor([1.0, -1.0, 0.5], dtype=F64) + shift
    return weights, src_means, 0.5 * spd(3, g, (3,)), weights.clone(), tgt_means, 0.5 * spd(3, g, (3,))


@pytest.mark.parametrize(("shift", "epsilon"), [(0.0, None), (10.0, 1.0)])
def test_mixture_transport_moves_source_mixture_onto_target_sliced_w2_drops_10x(shift, epsilon):
    """Sliced W2 to fresh target samples falls by at least 10x after the transport (and to the level of two
    target samples). With a large common shift the default epsilon = 0.1 median(C) blurs the plan (the
    blend of §3), so that case runs with a sharp epsilon."""
    g = torch.Generator().manual_seed(6)
    w_s, mu_s, s_s, w_t, mu_t, s_t = three_component_mixtures(g, shift)
    transport = mixture_transport(w_s, mu_s, s_s, w_t, mu_t, s_t, epsilon=epsilon)
    assert isinstance(transport, AffineTransport)
    assert transport.A.shape == (3, 3, 3) and transport.b.shape == (3, 3)
    x = sample_mixture(w_s, mu_s, s_s, 6000, g)
    y = sample_mixture(w_t, mu_t, s_t, 6000, g)
    before, after = sliced_w2(x, y, g), sliced_w2(transport(x), y, g)
    noise = sliced_w2(sample_mixture(w_t, mu_t, s_t, 6000, g), y, g)  # two target samples
    assert after * 10 < before
    assert after < 3 * noise
    # the plan is (almost) the optimal permutation σ, so T(μ_k) = μ_σ(k)
    cost = bures_cost(mu_s, s_s, mu_t, s_t)
    best = min(itertools.permutations(range(3)), key=lambda p: float(cost[range(3), list(p)].sum()))
    assert torch.allclose(transport(mu_s), mu_t[list(best)], atol=1e-2)


def test_default_epsilon_blends_when_costs_are_dominated_by_a_common_shift():
    g = torch.Generator().manual_seed(6)
    w_s, mu_s, s_s, w_t, mu_t, s_t = three_component_mixtures(g, 10.0)
    plan = sinkhorn(w_s, w_t, bures_cost(mu_s, s_s, mu_t, s_t))
    assert plan.max() < 0.9 / 3  # no source component goes wholly to one target component


def test_support_reduction_matches_the_full_dimensional_computation():
    g = torch.Generator().manual_seed(7)
    d, k = 40, 4
    w = orthonormal(d, k, g)
    mu_s = torch.randn(3, d, generator=g, dtype=F64)
    mu_s = mu_s[0] + (mu_s - mu_s[0]) @ w @ w.T  # source means in mean + span(W)
    s_s = (w * (torch.rand(3, 1, k, generator=g, dtype=F64) + 0.2)) @ w.T  # rank-k covariances
    member_bases = [orthonormal(d, k, g) for _ in range(3)]
    merged = merge_triplet(
        member_bases,
        [torch.randn(2, k, generator=g, dtype=F64) for _ in range(3)],
        [torch.rand(2, k, generator=g, dtype=F64) + 0.2 for _ in range(3)],
        [torch.randn(d, generator=g, dtype=F64) for _ in range(3)],
        [torch.tensor([0.3, 0.7], dtype=F64)] * 3,
    )
    args = (torch.full((3,), 1 / 3, dtype=F64), mu_s, s_s, merged.weights, merged.means, merged.covariances)
    reduced = mixture_transport(*args, basis=merged.basis, origin=merged.origin)
    full = mixture_transport(*args, basis=merged.basis, origin=merged.origin, support_rtol=None)
    x = mu_s[1] + torch.randn(50, k, generator=g, dtype=F64) @ w.T
    assert torch.allclose(reduced.A @ w, full.A @ w, atol=1e-6)
    y = reduced(x)
    assert torch.allclose(y, full(x), atol=1e-5)
    # one 2k-dim support per member gives the same map
    supports = [
        (torch.arange(2 * i, 2 * i + 2), torch.linalg.qr(torch.cat([w, b], 1)).Q) for i, b in enumerate(member_bases)
    ]
    per_member = mixture_transport(*args, basis=merged.basis, origin=merged.origin, supports=supports)
    assert torch.allclose(per_member.A @ w, full.A @ w, atol=1e-6)
    assert torch.allclose(per_member(x), full(x), atol=1e-5)
    with pytest.raises(ValueError, match="partition"):
        mixture_transport(*args, supports=supports[:2])
    # with a basis the output lies in origin + span(U)
    off = (y - merged.origin) - (y - merged.origin) @ merged.basis @ merged.basis.T
    assert off.abs().max() < 1e-10


def test_low_rank_mixture_onto_itself_is_the_identity():
    """Outside the covariances' support the floored map is the identity, not a 1/floor amplification."""
    g = torch.Generator().manual_seed(9)
    d, k = 30, 3
    w = orthonormal(d, k, g)
    covs = (w * (torch.rand(2, 1, k, generator=g, dtype=F64) + 0.5)) @ w.T
    means = torch.randn(d, generator=g, dtype=F64) + 3 * torch.randn(2, k, generator=g, dtype=F64) @ w.T
    weights = torch.tensor([0.4, 0.6], dtype=F64)
    x = means[1] + torch.randn(10, k, generator=g, dtype=F64) @ w.T
    reduced = mixture_transport(weights, means, covs, weights, means, covs, epsilon=0.01)
    assert torch.allclose(reduced.A, torch.eye(d, dtype=F64).expand(2, d, d), atol=1e-12)
    assert torch.allclose(reduced(x), x, atol=1e-12)
    full = mixture_transport(weights, means, covs, weights, means, covs, epsilon=0.01, support_rtol=None)
    assert full.A.abs().max() < 10  # round-off only, no 1/floor blow-up
    assert torch.allclose(full(x), x, atol=1e-6)
    a, _ = gaussian_map(means[0], covs[0], means[0], covs[0])
    assert torch.allclose(a @ w, w, atol=1e-8)


def test_merge_triplet_builds_an_orthonormal_union_basis_and_lifts_components():
    g = torch.Generator().manual_seed(8)
    d, ks, kc = 20, (3, 4, 3), (2, 3, 4)
    bases = [orthonormal(d, k, g) for k in ks]
    means_z = [torch.randn(c, k, generator=g, dtype=F64) for c, k in zip(kc, ks, strict=True)]
    variances_z = [torch.rand(c, k, generator=g, dtype=F64) + 0.1 for c, k in zip(kc, ks, strict=True)]
    pca_means = [torch.randn(d, generator=g, dtype=F64) for _ in ks]
    weights = [torch.rand(c, generator=g, dtype=F64) + 0.1 for c in kc]
    merged = merge_triplet(bases, means_z, variances_z, pca_means, weights)
    u = merged.basis
    total = sum(kc)
    assert u.shape == (d, sum(ks) + 2)  # 10 basis vectors + 2 independent mean offsets (they sum to 0)
    assert torch.allclose(u.T @ u, torch.eye(u.shape[1], dtype=F64), atol=1e-12)
    assert merged.weights.shape == (total,) and torch.allclose(merged.weights.sum(), torch.tensor(1.0, dtype=F64))
    assert torch.allclose(merged.weights[: kc[0]], weights[0] / weights[0].sum() / 3)
    assert torch.allclose(merged.origin, torch.stack(pca_means).mean(0))
    assert merged.means.shape == (total, d) and merged.covariances.shape == (total, d, d)
    # member 2, component 1: μ = m + W μ_z, S = W diag(σ²) Wᵀ
    i = kc[0] + 1
    assert torch.allclose(merged.means[i], pca_means[1] + bases[1] @ means_z[1][1])
    assert torch.allclose(merged.covariances[i], bases[1] @ torch.diag(variances_z[1][1]) @ bases[1].T)
    projector = u @ u.T
    centred = merged.means - merged.origin
    assert (centred - centred @ projector).abs().max() < 1e-12
    assert (merged.covariances - projector @ merged.covariances).abs().max() < 1e-12
    # U coordinates round-trip
    assert torch.allclose(merged.origin + merged.coord_means @ u.T, merged.means, atol=1e-12)
    assert torch.allclose(u @ merged.coord_covariances @ u.T, merged.covariances, atol=1e-12)
    # basis of [W_1 | W_2 | W_3] only: means are projected onto origin + span(U)
    plain = merge_triplet(bases, means_z, variances_z, pca_means, weights, include_means=False)
    assert plain.basis.shape == (d, sum(ks))
    centred = plain.means - plain.origin
    assert (centred - centred @ plain.basis @ plain.basis.T).abs().max() < 1e-12

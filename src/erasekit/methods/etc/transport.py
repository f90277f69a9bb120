"""Affine optimal transport between Gaussian mixtures (specs/etc.md §3), as pure float64 tensor functions.

A target concept's mixture (K source components) is mapped onto the merged mixture of its mapping
triplet (L components): Bures-Wasserstein costs between components, a Sinkhorn plan between the
mixture weights, per-pair Gaussian Monge maps, averaged per source component and blended by the
source posterior r_k(x).

Numerics. Covariances lifted from a PCA are low rank (rank <= k = 32 in R^384 or R^768).
Eigenvalues of each S_k are floored at ``floor`` (1e-8, §3); the inner square root
(S_k^½ S_l S_k^½)^½ is floored at floor² so that directions outside both supports map by the identity
(epsilon-noise onto epsilon-noise) instead of being amplified by 1/floor. ``mixture_transport``
solves each pair in a support holding both covariances (an exact change of basis for the floored problem),
then lifts the maps back to R^d: the joint support of all covariances (about 10x faster than R^384), or one
support per triplet member of 2k dims (about 5x faster again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

Tensor = torch.Tensor

FLOOR = 1e-8  # eigenvalue floor of the covariances (specs/etc.md §3)


def _sym(s: Tensor) -> Tensor:
    return 0.5 * (s + s.mT)


def _eig_powers(s: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """S^½ and S^-½ of symmetric PSD matrices (..., d, d) from one eigh, eigenvalues floored at ``floor``."""
    vals, vecs = torch.linalg.eigh(_sym(s))
    root = vals.clamp_min(floor).sqrt()
    return (vecs * root.unsqueeze(-2)) @ vecs.mT, (vecs / root.unsqueeze(-2)) @ vecs.mT


def sqrtm_psd(s: Tensor, floor: float = FLOOR) -> Tensor:
    """Principal square root of PSD matrices (..., d, d) via eigh, eigenvalues floored at ``floor`` (§3)."""
    return _eig_powers(s, floor)[0]


def inv_sqrtm_psd(s: Tensor, floor: float = FLOOR) -> Tensor:
    """S^-½ of PSD matrices (..., d, d) via eigh, eigenvalues floored at ``floor`` (§3)."""
    return _eig_powers(s, floor)[1]


def _cross_terms(s1: Tensor, s2: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """For broadcastable S1, S2: the Gaussian OT matrix A = S1^-½ (S1^½ S2 S1^½)^½ S1^-½ and the Bures
    cross term tr (S1^½ S2 S1^½)^½ — one eigh of the middle matrix serves both (§3)."""
    half, inv_half = _eig_powers(s1, floor)
    vals, vecs = torch.linalg.eigh(_sym(half @ s2 @ half))
    trace = vals.clamp_min(0.0).sqrt().sum(-1)
    middle = (vecs * vals.clamp_min(floor * floor).sqrt().unsqueeze(-2)) @ vecs.mT
    return _sym(inv_half @ middle @ inv_half), trace


def gaussian_map(m1: Tensor, s1: Tensor, m2: Tensor, s2: Tensor, floor: float = FLOOR) -> tuple[Tensor, Tensor]:
    """Monge map of N(m1, S1) onto N(m2, S2) as T(x) = A x + b (§3), batched over leading dims.

    A = S1^-½ (S1^½ S2 S1^½)^½ S1^-½ (symmetric PSD, A S1 A = S2) and b = m2 - A m1, so T(m1) = m2.
    """
    a = _cross_terms(s1, s2, floor)[0]
    return a, m2 - (a @ m1.unsqueeze(-1)).squeeze(-1)


def _bures(m1: Tensor, s1: Tensor, m2: Tensor, s2: Tensor, floor: float) -> Tensor:
    cross = _cross_terms(s1, s2, floor)[1]
    trace = torch.diagonal(s1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(s2, dim1=-2, dim2=-1).sum(-1)
    return ((m1 - m2) ** 2).sum(-1) + (trace - 2.0 * cross).clamp_min(0.0)


def bures_cost(m1: Tensor, s1: Tensor, m2: Tensor, s2: Tensor, floor: float = FLOOR) -> Tensor:
    """Squared 2-Wasserstein distance between Gaussians, ||m1 - m2||² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½) (§3).

    Pairwise: (K, d)/(K, d, d) sources against (L, d)/(L, d, d) targets give a (K, L) matrix; single
    Gaussians (d,)/(d, d) give a scalar.
    """
    if m1.dim() == 1 and m2.dim() == 1:
        return _bures(m1, s1, m2, s2, floor)
    return _bures(m1[:, None], s1[:, None], m2[None], s2[None], floor)


def sinkhorn(
    a: Tensor, b: Tensor, cost: Tensor, epsilon: float | None = None, iters: int = 500, tol: float = 1e-9
) -> Tensor:
    """Entropic OT plan (K, L) between weights a (K,) and b (L,), log-domain Sinkhorn (§3).

    Default epsilon = 0.1 median(cost) (falls back to 0.1 max, then 1, when the median is ~0). Stops when the
    row marginals are within ``tol`` (the column marginals are exact after each sweep).
    """
    cost = cost.double()
    a = a.double() / a.sum()
    b = b.double() / b.sum()
    if epsilon is None:
        epsilon, largest = 0.1 * float(cost.median()), 0.1 * float(cost.abs().max())
        if not epsilon > 1e-12 * largest:  # a zero (or round-off) median
            epsilon = largest or 1.0
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    for _ in range(iters):
        f = epsilon * (log_a - torch.logsumexp((g[None, :] - cost) / epsilon, dim=1))
        g = epsilon * (log_b - torch.logsumexp((f[:, None] - cost) / epsilon, dim=0))
        plan = torch.exp((f[:, None] + g[None, :] - cost) / epsilon)
        if float((plan.sum(1) - a).abs().max()) <= tol:
            break
    return plan


@dataclass(frozen=True)
class MergedMixture:
    """A merged mapping mixture (§3): Gaussian components lifted to R^d, supported on origin + span(basis)."""

    basis: Tensor  # U (d, r), orthonormal columns
    origin: Tensor  # (d,) mean of the members' PCA means: the origin of U coordinates
    weights: Tensor  # (K,) sums to 1
    means: Tensor  # (K, d)
    covariances: Tensor  # (K, d, d)

    @property
    def coord_means(self) -> Tensor:
        """Component means in U coordinates, (K, r)."""
        return (self.means - self.origin) @ self.basis

    @property
    def coord_covariances(self) -> Tensor:
        """Component covariances in U coordinates, Uᵀ S U (K, r, r)."""
        return self.basis.T @ self.covariances @ self.basis


def merge_triplet(
    bases: Sequence[Tensor],
    means_z: Sequence[Tensor],
    variances_z: Sequence[Tensor],
    pca_means: Sequence[Tensor],
    weights: Sequence[Tensor],
    include_means: bool = True,
    rtol: float = 1e-10,
) -> MergedMixture:
    """Merge n member mixtures (a triplet: n = 3), each in its own PCA basis W_i (d, k_i), into one (§3).

    Components lift to μ = m_i + W_i μ_z, S = W_i diag(σ²) W_iᵀ; weights π/n. U is an orthonormal basis
    (SVD, singular values below ``rtol`` max cut) of [W_1 | ... | W_n], and [reading] with
    ``include_means`` also of the offsets m_i - origin, so the lifted means lie in origin + span(U) and
    the final projection of §3 keeps them. Without it the means are projected onto origin + span(U).
    """
    n = len(bases)
    ws = [w.double() for w in bases]
    ms = [m.double() for m in pca_means]
    origin = torch.stack(ms).mean(0)
    columns = ws + ([torch.stack([m - origin for m in ms], 1)] if include_means else [])
    u, sing, _ = torch.linalg.svd(torch.cat(columns, 1), full_matrices=False)
    basis = u[:, sing > rtol * sing.max()]
    means = torch.cat([m + mz.double() @ w.T for w, m, mz in zip(ws, ms, means_z, strict=True)])
    covs = torch.cat([(w * v.double()[:, None, :]) @ w.T for w, v in zip(ws, variances_z, strict=True)])
    if not include_means:
        means = origin + (means - origin) @ basis @ basis.T
    pis = torch.cat([p.double() / p.double().sum() for p in weights]) / n
    return MergedMixture(basis, origin, pis, means, covs)  # symmetric up to round-off; consumers symmetrise


@dataclass(frozen=True)
class AffineTransport:
    """T(x) = Σ_k r_k(x) (A_k x + b_k), then [optionally] origin + U Uᵀ (T(x) - origin) (§3).

    r_k is the source posterior, [reading] Gaussian with the source covariances plus ``ridge`` I.
    """

    A: Tensor  # (K, d, d)
    b: Tensor  # (K, d)
    source_weights: Tensor  # (K,)
    source_means: Tensor  # (K, d)
    source_covariances: Tensor  # (K, d, d)
    basis: Tensor | None = None  # U (d, r) of the target (merged) mixture
    origin: Tensor | None = None  # (d,)
    ridge: float = 1e-6

    def responsibilities(self, x: Tensor) -> Tensor:
        """Gaussian posterior r_k(x) (M, K), by log-sum-exp."""
        x = x.double()
        d = x.shape[-1]
        chol = torch.linalg.cholesky(self.source_covariances + self.ridge * torch.eye(d, dtype=torch.float64))
        diff = (x[None] - self.source_means[:, None]).mT  # (K, d, M)
        z = torch.linalg.solve_triangular(chol, diff, upper=False)
        logdet = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        log_p = self.source_weights.log()[:, None] - 0.5 * (z.pow(2).sum(1) + logdet[:, None])  # (K, M)
        return torch.softmax(log_p, dim=0).T

    def __call__(self, x: Tensor) -> Tensor:
        xd = x.double()
        r = self.responsibilities(xd)  # (M, K)
        per_component = xd @ self.A.mT + self.b[:, None]  # (K, M, d): A_k x + b_k
        mapped = torch.einsum("mk,kmi->mi", r, per_component)
        if self.basis is not None:
            origin = self.origin if self.origin is not None else torch.zeros_like(mapped[0])
            mapped = origin + (mapped - origin) @ self.basis @ self.basis.T
        return mapped.to(x.dtype)


def _support(covs: Tensor, rtol: float) -> Tensor | None:
    """Orthonormal basis Q (d, r) of the joint column space of covariances (N, d, d); None when r = d."""
    vals, vecs = torch.linalg.eigh(_sym(covs.sum(0)))
    keep = vals > rtol * vals.max().clamp_min(1e-300)
    return None if bool(keep.all()) else vecs[:, keep]


def mixture_transport(
    source_weights: Tensor,
    source_means: Tensor,
    source_covs: Tensor,
    target_weights: Tensor,
    target_means: Tensor,
    target_covs: Tensor,
    epsilon: float | None = None,
    basis: Tensor | None = None,
    origin: Tensor | None = None,
    *,
    floor: float = FLOOR,
    support_rtol: float | None = 1e-12,
    supports: Sequence[tuple[Tensor, Tensor]] | None = None,
) -> AffineTransport:
    """Mixture-to-mixture affine OT (§3): Bures costs C_kl, Sinkhorn plan, per-pair Gaussian maps A_kl,
    A_k = Σ_l p(l|k) A_kl and b_k = Σ_l p(l|k)(μ_l - A_kl μ_k), p(l|k) = plan_kl / Σ_l plan_kl.

    Pairs are solved in a support Q (orthonormal columns) holding both covariances' column spaces: exact for
    the floored problem, since outside Q both sides are floor·I and the map is the identity. ``supports``
    gives (target component indices, Q) blocks that partition the target components (a merged triplet: one
    block per member, Q spanning the source's and that member's PCA bases, 2k dims); without it one Q is the
    joint column space of all covariances (``support_rtol``), or R^d itself when ``support_rtol`` is None.
    """
    w_s, mu_s, s_s = source_weights.double(), source_means.double(), source_covs.double()
    w_t, mu_t, s_t = target_weights.double(), target_means.double(), target_covs.double()
    d = mu_s.shape[-1]
    eye = torch.eye(d, dtype=torch.float64)
    if supports is None:
        q = _support(torch.cat([s_s, s_t]), support_rtol) if support_rtol is not None else None
        supports = [(torch.arange(len(w_t)), eye if q is None else q)]
    if not torch.equal(torch.cat([index for index, _ in supports]).sort().values, torch.arange(len(w_t))):
        raise ValueError("supports must partition the target components")
    cross = w_s.new_empty(len(w_s), len(w_t))
    blocks = []
    for index, q in supports:
        q = q.double()
        pair_a, cross[:, index] = _cross_terms((q.mT @ s_s @ q)[:, None], (q.mT @ s_t[index] @ q)[None], floor)
        blocks.append((index, q, pair_a))
    trace = torch.diagonal(s_s, dim1=-2, dim2=-1).sum(-1)[:, None] + torch.diagonal(s_t, dim1=-2, dim2=-1).sum(-1)
    cost = (mu_s[:, None] - mu_t[None]).pow(2).sum(-1) + (trace - 2.0 * cross).clamp_min(0.0)
    plan = sinkhorn(w_s, w_t, cost, epsilon)
    cond = plan / plan.sum(1, keepdim=True).clamp_min(1e-300)  # p(l|k), rows sum to 1
    # each A_kl = Q a_kl Qᵀ + (I - Q Qᵀ), so A_k = I + Σ_blocks Q (Σ_{l in block} p(l|k) a_kl - p(block|k) I) Qᵀ
    a = eye.expand(len(w_s), d, d).clone()
    for index, q, pair_a in blocks:
        share = cond[:, index]
        inner = torch.einsum("kl,klij->kij", share, pair_a)
        inner = inner - share.sum(1)[:, None, None] * torch.eye(q.shape[1], dtype=torch.float64)
        a = a + q @ inner @ q.mT
    # Σ_l p(l|k)(μ_l - A_kl μ_k) = Σ_l p(l|k) μ_l - A_k μ_k
    b = cond @ mu_t - (a @ mu_s.unsqueeze(-1)).squeeze(-1)
    return AffineTransport(
        a,
        b,
        w_s / w_s.sum(),
        mu_s,
        _sym(s_s),
        basis.double() if basis is not None else None,
        origin.double() if origin is not None else None,
    )

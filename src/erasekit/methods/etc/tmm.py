"""Concept distributions for ETC (specs/etc.md §1–§2): per-concept PCA, a Student-t mixture fitted by EM,
t-mixture sampling and highest-density (HPD) bands.

Everything is batched over C concepts of equal shapes (no Python loop over concepts) and computed in float64;
all returned tensors are float64 on the device of the inputs. Random draws come from an optional
``torch.Generator`` (on its own device), so results are reproducible given its seed. Memory grows as
C × samples × dims: callers with thousands of concepts should process them in chunks (``select``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_F64 = torch.float64
_EPS = 1e-12  # floor for component counts N_k and variances: empty components stay finite, never NaN
Index = Tensor | slice


def _draw(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, normal: bool = False
) -> Tensor:
    """Uniform [0, 1) (or standard normal) float64 draws from ``generator`` on its device, moved to ``device``."""
    source = generator.device if generator is not None else device
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=generator, device=source, dtype=_F64).to(device)


# --- PCA (specs/etc.md §1: z = (x − m) W_pca) -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ConceptPCA:
    mean: Tensor  # (C, d)
    basis: Tensor  # (C, d, k), orthonormal columns

    def project(self, x: Tensor) -> Tensor:
        """(C, M, d) → (C, M, k)."""
        return (x.to(_F64) - self.mean[:, None]) @ self.basis

    def lift(self, z: Tensor) -> Tensor:
        """(C, M, k) → (C, M, d), back into the concept's affine subspace (specs/etc.md §2)."""
        return self.mean[:, None] + z.to(_F64) @ self.basis.transpose(1, 2)

    def select(self, index: Index) -> ConceptPCA:
        return ConceptPCA(self.mean[index], self.basis[index])


def fit_pca(x: Tensor, k: int) -> ConceptPCA:
    """Per-concept PCA of x (C, N, d) to k dims (specs/etc.md §1), by a batched SVD of the centred data."""
    if x.dim() != 3:
        raise ValueError(f"fit_pca expects (C, N, d), got shape {tuple(x.shape)}")
    _, n, d = x.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"fit_pca: k={k} must be in [1, min(N, d)] = [1, {min(n, d)}]")
    x = x.to(_F64)
    mean = x.mean(1)
    _, _, vh = torch.linalg.svd(x - mean[:, None], full_matrices=False)
    basis = vh[:, :k].transpose(1, 2)
    # Deterministic signs: each column's largest-magnitude entry is positive.
    sign = basis.gather(1, basis.abs().argmax(1, keepdim=True)).sign()
    return ConceptPCA(mean, basis * torch.where(sign == 0, 1.0, sign))


def sample_spread(x: Tensor) -> Tensor:
    """(C,) each concept's typical distance from its mean: the median over its samples x (C, N, d)."""
    x = x.to(_F64)
    return (x - x.mean(1, keepdim=True)).norm(dim=-1).median(1).values


def off_plane(
    pca: ConceptPCA,
    points: Tensor,
    scale: Tensor,
    radius: tuple[float, float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Off-plane anchors [reading, specs/etc.md §2]: points (C, M, d) of concept c moved by r·scale_c along a
    random unit direction orthogonal to c's PCA plane, r ~ U(radius) → (C, M, d).

    The PCA keeps 99% of a concept's template variation, so its tMM shell lies in that plane; a neighbouring
    concept (one word changed, same template) sits about one spread away, two thirds of the offset out of the
    plane (measured on ShapeWorld). Anchors out there are where the concept fades towards its neighbours."""
    lo, hi = radius
    if not 0 < lo <= hi:
        raise ValueError(f"off_plane: radius must satisfy 0 < low <= high, got {radius}")
    c, m, d = points.shape
    direction = _draw((c, m, d), generator, points.device, normal=True)
    direction = direction - (direction @ pca.basis) @ pca.basis.transpose(1, 2)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    r = lo + (hi - lo) * _draw((c, m, 1), generator, points.device)
    return points.to(_F64) + direction * r * scale.to(_F64)[:, None, None]


# --- Student-t mixture (specs/etc.md §1) --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TMixture:
    weights: Tensor  # (C, K), π
    means: Tensor  # (C, K, k), μ
    variances: Tensor  # (C, K, k), diagonal scales Σ
    dof: float  # ν, fixed

    def select(self, index: Index) -> TMixture:
        return TMixture(self.weights[index], self.means[index], self.variances[index], self.dof)

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log π_k + log t(z; μ_k, Σ_k, ν): (C, M, k) → (C, M, K)."""
        return _component_terms(self, _squares(z))[0]

    def log_prob(self, z: Tensor) -> Tensor:
        """Log mixture density: (C, M, k) → (C, M)."""
        return self.component_log_prob(z).logsumexp(-1)


def _component_terms(mixture: TMixture, zz: Tensor) -> tuple[Tensor, Tensor]:
    """(log π_k + log t_k, δ), both (C, M, K), for zz = [z², z] (C, M, 2k); log t as in specs/etc.md §1."""
    nu, k = mixture.dof, zz.shape[-1] // 2
    inv = mixture.variances.reciprocal()
    # δ_ik = Σ_j (z_ij − μ_kj)² / Σ_kj, expanded into one batched matmul (no (C, M, K, k) temporary).
    coef = torch.cat([inv, -2 * mixture.means * inv], -1).transpose(1, 2)  # (C, 2k, K)
    delta = (zz @ coef + (mixture.means.square() * inv).sum(-1)[:, None]).clamp_min(0)
    const = math.lgamma((nu + k) / 2) - math.lgamma(nu / 2) - k / 2 * math.log(nu * math.pi)
    offset = const + mixture.weights.log() - 0.5 * mixture.variances.log().sum(-1)  # (C, K)
    return offset[:, None] - (nu + k) / 2 * torch.log1p(delta / nu), delta


def _squares(z: Tensor) -> Tensor:
    """[z², z] (C, M, 2k) in float64, the operand of the batched matmuls of the E- and M-steps."""
    z = z.to(_F64)
    return torch.cat([z.square(), z], -1)


@dataclass
class FitReport:
    iterations: int  # EM steps taken by the batch (the slowest concept)
    log_likelihood: Tensor  # (C,), final mean per-sample log-likelihood
    history: list[Tensor]  # per iteration (C,), starting at the initialisation
    steps: Tensor  # (C,), EM steps applied to each concept
    converged: Tensor  # (C,) bool, improvement fell below tol before max_iter


def _m_step(
    zz: Tensor, comp: Tensor, lse: Tensor, delta: Tensor, dof: float, ridge: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One EM update (specs/etc.md §1) from the E-step terms (lse = log-sum-exp of comp over components);
    returns (weights, means, variances)."""
    k = zz.shape[-1] // 2
    r = (comp - lse[..., None]).exp()  # responsibilities (C, N, K)
    w = r * ((dof + k) / (dof + delta))  # r · u, u the latent precision
    nk = r.sum(1).clamp_min(_EPS)  # (C, K)
    sw = w.sum(1).clamp_min(_EPS)[..., None]
    s = w.transpose(1, 2) @ zz  # [Σ r u z², Σ r u z] → (C, K, 2k)
    s2, s1 = s[..., :k], s[..., k:]
    means = s1 / sw
    scatter = (s2 - 2 * means * s1 + means.square() * sw).clamp_min(0)  # Σ r u (z − μ)²
    variances = (scatter / nk[..., None] + ridge).clamp_min(_EPS)
    return nk / nk.sum(-1, keepdim=True), means, variances


def fit_tmm(
    z: Tensor,
    components: int = 4,
    dof: float = 2.0,
    max_iter: int = 200,
    tol: float = 1e-4,
    ridge: float = 1e-6,
    generator: torch.Generator | None = None,
) -> tuple[TMixture, FitReport]:
    """EM for a diagonal Student-t mixture with fixed ν on z (C, N, k), batched over concepts (specs/etc.md §1).

    A concept stops (its parameters freeze) once its mean per-sample log-likelihood improves by less than tol;
    the loop ends when all have stopped or after max_iter steps. The initial means are the same K random
    data indices for every concept, so each concept's fit is the same as fitting it alone with that generator.
    """
    if z.dim() != 3:
        raise ValueError(f"fit_tmm expects (C, N, k), got shape {tuple(z.shape)}")
    c, n, k = z.shape
    if components < 1 or n < components:
        raise ValueError(f"fit_tmm: need 1 <= components <= N, got components={components}, N={n}")
    if dof <= 0:
        raise ValueError(f"fit_tmm: dof must be positive, got {dof}")
    z = z.to(_F64)
    source = generator.device if generator is not None else z.device
    pick = torch.randperm(n, generator=generator, device=source)[:components].to(z.device)
    variances = (z.var(1, unbiased=False) + ridge).clamp_min(_EPS)[:, None].expand(c, components, k).clone()
    mixture = TMixture(
        torch.full((c, components), 1 / components, dtype=_F64, device=z.device), z[:, pick], variances, dof
    )
    zz = _squares(z)
    comp, delta = _component_terms(mixture, zz)
    lse = comp.logsumexp(-1)
    ll = lse.mean(-1)
    history = [ll]
    active = torch.ones(c, dtype=torch.bool, device=z.device)
    steps = torch.zeros(c, dtype=torch.long, device=z.device)
    for _ in range(max_iter):
        weights, means, variances = _m_step(zz, comp, lse, delta, dof, ridge)
        keep = ~active
        mixture = TMixture(
            torch.where(keep[:, None], mixture.weights, weights),
            torch.where(keep[:, None, None], mixture.means, means),
            torch.where(keep[:, None, None], mixture.variances, variances),
            dof,
        )
        comp, delta = _component_terms(mixture, zz)
        lse = comp.logsumexp(-1)
        new_ll = lse.mean(-1)
        steps += active
        active = active & (new_ll - ll >= tol)
        ll = new_ll
        history.append(ll)
        if not active.any():
            break
    return mixture, FitReport(len(history) - 1, ll, history, steps, ~active)


# --- Sampling (specs/etc.md §1) -------------------------------------------------------------------------------------


def standard_gamma(
    shape: float, size: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """Gamma(shape, rate 1) variates by Marsaglia–Tsang, seeded by ``generator`` (torch's gamma takes none)."""
    if shape <= 0:
        raise ValueError(f"standard_gamma: shape must be positive, got {shape}")
    device = torch.device(device)
    a = shape + 1.0 if shape < 1 else shape  # Gamma(a) = Gamma(a + 1) · U^(1/a) for a < 1
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(math.prod(size), dtype=_F64, device=device)
    pending = torch.arange(out.numel(), device=device)
    while pending.numel():
        x = _draw((pending.numel(),), generator, device, normal=True)
        u = _draw((pending.numel(),), generator, device)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (u.log() < 0.5 * x.square() + d - d * v + d * v.clamp_min(_EPS).log())
        out[pending[ok]] = (d * v)[ok]
        pending = pending[~ok]
    if shape < 1:
        out = out * (1 - _draw(out.shape, generator, device)) ** (1 / shape)
    return out.reshape(size)


def sample_tmm(mixture: TMixture, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n samples per concept → (C, n, k): k ~ π; z = μ_k + √Σ_k · g / √τ, g ~ N(0, I), τ ~ Gamma(ν/2, rate ν/2)."""
    c, n_comp, k = mixture.means.shape
    device = mixture.means.device
    cdf = mixture.weights.cumsum(-1)
    u = _draw((c, n), generator, device) * cdf[:, -1:]
    comp = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).clamp_max(n_comp - 1)
    g = _draw((c, n, k), generator, device, normal=True)
    tau = standard_gamma(mixture.dof / 2, (c, n), generator, device) / (mixture.dof / 2)
    index = comp[..., None].expand(c, n, k)
    scale = mixture.variances.sqrt().gather(1, index)
    return mixture.means.gather(1, index) + scale * g / tau.sqrt()[..., None]


# --- HPD bands (specs/etc.md §2) ------------------------------------------------------------------------------------


def hpd_threshold(
    mixture: TMixture, coverage: float, n_mc: int = 10_000, generator: torch.Generator | None = None
) -> Tensor:
    """(C,) log-density thresholds: the (1 − coverage) quantile of log p over n_mc Monte Carlo samples,
    so that ``coverage`` of each concept's mass has log p ≥ threshold."""
    if not 0 < coverage < 1:
        raise ValueError(f"hpd_threshold: coverage must be in (0, 1), got {coverage}")
    lp = mixture.log_prob(sample_tmm(mixture, n_mc, generator)).sort(-1).values
    pos = (1 - coverage) * (n_mc - 1)  # linear interpolation, as torch.quantile (which caps the input size)
    lo, frac = math.floor(pos), pos - math.floor(pos)
    return lp[:, lo] * (1 - frac) + lp[:, min(lo + 1, n_mc - 1)] * frac


def sample_band(
    mixture: TMixture,
    n: int,
    generator: torch.Generator | None = None,
    inside: float | None = None,
    outside: float | None = None,
    max_rounds: int = 50,
    n_mc: int = 10_000,
) -> Tensor:
    """Rejection-sample n points per concept (C, n, k) with log p ≥ threshold(inside) (the HPD core) and/or
    log p < threshold(outside) (the shell). The thresholds are drawn first from ``generator`` (inside, then
    outside), then rounds of candidates for all concepts until each has n."""
    if inside is not None and outside is not None and inside <= outside:
        raise ValueError(f"sample_band: empty band, inside={inside} must exceed outside={outside}")
    c, _, k = mixture.means.shape
    device = mixture.means.device
    lo = torch.full((c,), -math.inf, dtype=_F64, device=device)
    hi = torch.full((c,), math.inf, dtype=_F64, device=device)
    if inside is not None:
        lo = hpd_threshold(mixture, inside, n_mc, generator)
    if outside is not None:
        hi = hpd_threshold(mixture, outside, n_mc, generator)
    rate = max((1.0 if inside is None else inside) - (0.0 if outside is None else outside), 0.02)
    per_round = math.ceil(1.2 * n / rate) + 16
    out = torch.zeros(c, n, k, dtype=_F64, device=device)
    filled = torch.zeros(c, dtype=torch.long, device=device)
    for _ in range(max_rounds):
        cand = sample_tmm(mixture, per_round, generator)
        lp = mixture.log_prob(cand)
        ok = (lp >= lo[:, None]) & (lp < hi[:, None])
        pos = filled[:, None] + ok.cumsum(-1) - 1  # slot of each accepted candidate
        rows, cols = (ok & (pos < n)).nonzero(as_tuple=True)
        out[rows, pos[rows, cols]] = cand[rows, cols]
        filled = (filled + ok.sum(-1)).clamp_max(n)
        if bool((filled == n).all()):
            return out
    short = (filled < n).nonzero().flatten().tolist()
    raise RuntimeError(f"sample_band: concept(s) {short[:20]} got fewer than {n} samples in {max_rounds} rounds")


# --- Convenience: a concept's distribution in R^d -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ConceptDistribution:
    pca: ConceptPCA
    mixture: TMixture
    report: FitReport | None = None

    @classmethod
    def fit(
        cls,
        x: Tensor,
        k: int = 32,
        components: int = 4,
        dof: float = 2.0,
        max_iter: int = 200,
        tol: float = 1e-4,
        ridge: float = 1e-6,
        generator: torch.Generator | None = None,
    ) -> ConceptDistribution:
        """PCA to k dims, then the tMM on the projections (specs/etc.md §1); x is (C, N, d)."""
        pca = fit_pca(x, k)
        mixture, report = fit_tmm(pca.project(x), components, dof, max_iter, tol, ridge, generator)
        return cls(pca, mixture, report)

    def select(self, index: Index) -> ConceptDistribution:
        return ConceptDistribution(self.pca.select(index), self.mixture.select(index))

    def sample_core(
        self, n: int, generator: torch.Generator | None = None, coverage: float = 0.9, n_mc: int = 10_000
    ) -> Tensor:
        """Targets (specs/etc.md §2): n samples per concept inside the coverage-HPD core, lifted → (C, n, d)."""
        return self._sample_band(n, generator, n_mc, inside=coverage)

    def sample_shell(
        self, n: int, generator: torch.Generator | None = None, outside: float = 0.8, n_mc: int = 10_000
    ) -> Tensor:
        """Boundary anchors (specs/etc.md §2): n samples per concept outside the outside-HPD region → (C, n, d)."""
        return self._sample_band(n, generator, n_mc, outside=outside)

    def _sample_band(self, n: int, generator: torch.Generator | None, n_mc: int, chunk: int = 256, **band) -> Tensor:
        """sample_band over chunks of concepts (memory ~ chunk x n_mc x k), lifted to R^d."""
        count = len(self.mixture.weights)
        parts = [
            sample_band(self.mixture.select(slice(start, start + chunk)), n, generator, n_mc=n_mc, **band)
            for start in range(0, count, chunk)
        ]
        return self.pca.lift(torch.cat(parts))

    def lifted_components(self) -> tuple[Tensor, Tensor]:
        """Components in R^d (specs/etc.md §3): means m + W μ_z (C, K, d), covariances W diag(Σ) Wᵀ (C, K, d, d)."""
        w = self.pca.basis
        means = self.pca.mean[:, None] + self.mixture.means @ w.transpose(1, 2)
        covariances = (w[:, None] * self.mixture.variances[:, :, None]) @ w.transpose(1, 2)[:, None]
        return means, covariances

"""The MoEraser (specs/etc.md §4) and NIR helpers (§5). An edit artifact attaches each eraser to its
projector with a forward hook, so the projector returns W c + Δ(c) (``erasekit.artifacts.apply_artifact``).

Δ(x) = (1/H) [(1 - κ) Σ_e g_e (h_e O_e + o_e) + κ (h_s O_s + o_s)],  h = SiLU(x̃ A + a) ⊙ (x̃ B + b),
x̃ = RMSNorm(x), g = top-k softmax of Router(RMSNorm'(x)) (+ N(0, router_noise²) noise in training).

Each routed expert runs on the tokens routed to it only (k of E per token), the shared one on all: a third
of the work of computing every expert densely at E = 8, k = 2. The experts' gate and up projections are
stored side by side, columns [e, H]. Output projections (O, o) and the router are zero-initialised, so
Δ ≡ 0 at initialisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from erasekit.utils.validation import AT_LEAST_ONE, NON_NEGATIVE, check_numbers

Tensor = torch.Tensor


@dataclass
class MoEraserConfig:
    experts: int = 8  # E routed experts
    hidden: int = 64  # H, hidden width of each expert (384 on SD, §4; smaller on ShapeWorld)
    top_k: int = 2
    shared_weight: float = 0.1  # κ
    router_noise: float = 1.0  # std of the Gaussian noise on the router logits, training mode only
    balance_weight: float = 0.01  # weight of CV²(importance) + CV²(load)
    decorrelation_weight: float = 0.001  # weight of the expert decorrelation term
    # NIR (§5) [reading]: rank of a linear path on the raw token, Δ(x) += (x R_in) R_out, that cancels the
    # injected noise exactly (``restoring_eraser``); 0 (no path) for every eraser but a NIR student
    restore_rank: int = 0

    RANGES: ClassVar = {
        **dict.fromkeys(("experts", "hidden", "top_k"), AT_LEAST_ONE),
        **dict.fromkeys(
            ("shared_weight", "router_noise", "balance_weight", "decorrelation_weight", "restore_rank"), NON_NEGATIVE
        ),
    }

    def __post_init__(self) -> None:
        check_numbers(self, "MoEraser")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * scale, with a learnable per-feature scale (init 1)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale


def _cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation over experts (0 for a single expert)."""
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.float().var(unbiased=False) / (x.float().mean().pow(2) + 1e-10)


class MoEraser(nn.Module):
    """Token-wise mixture-of-experts correction Δ: (..., d_in) -> (..., d_out) (§4)."""

    def __init__(self, d_in: int, d_out: int, config: MoEraserConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MoEraserConfig()
        if not 1 <= config.top_k <= config.experts:
            raise ValueError(f"top_k must be in [1, experts], got {config.top_k} of {config.experts}")
        self.d_in, self.d_out = d_in, d_out
        n, h = config.experts + 1, config.hidden  # routed experts + the shared one (last)
        self.norm = RMSNorm(d_in)  # x̃ for the experts
        self.router_norm = RMSNorm(d_in)  # RMSNorm' for the router
        self.router = nn.Linear(d_in, config.experts)
        # Gate (A_e, a_e) and up (B_e, b_e) projections of all n experts side by side, columns [e, H].
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default range
        self.w_gate = nn.Parameter(torch.empty(d_in, n * h).uniform_(-bound, bound))
        self.b_gate = nn.Parameter(torch.empty(n * h).uniform_(-bound, bound))
        self.w_up = nn.Parameter(torch.empty(d_in, n * h).uniform_(-bound, bound))
        self.b_up = nn.Parameter(torch.empty(n * h).uniform_(-bound, bound))
        self.w_out = nn.Parameter(torch.zeros(n, h, d_out))  # O_e (zero init)
        self.b_out = nn.Parameter(torch.zeros(n, d_out))  # o_e (zero init)
        nn.init.zeros_(self.router.weight)
        nn.init.zeros_(self.router.bias)
        rank = config.restore_rank
        self.restore_in = nn.Parameter(torch.zeros(d_in, rank)) if rank else None
        self.restore_out = nn.Parameter(torch.zeros(rank, d_out)) if rank else None
        self._stats: dict[str, Tensor] = {}

    def _route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Top-k softmax gates (N, E) and the smooth per-expert load (E,) for the balance loss."""
        cfg = self.config
        clean = self.router(self.router_norm(x)).float()
        noisy = self.training and cfg.router_noise > 0
        logits = clean + cfg.router_noise * torch.randn_like(clean) if noisy else clean
        k_plus = min(cfg.top_k + 1, cfg.experts)
        top_vals, top_idx = logits.topk(k_plus, dim=-1)
        gates = torch.zeros_like(logits).scatter(
            -1, top_idx[:, : cfg.top_k], torch.softmax(top_vals[:, : cfg.top_k], dim=-1)
        )
        if noisy and cfg.top_k < cfg.experts:
            # Shazeer et al. 2017: P(expert e stays in the top k under fresh noise) = Φ((clean_e - threshold_e)/σ),
            # threshold_e = the k-th largest noisy logit among the other experts.
            kth, next_ = top_vals[:, cfg.top_k - 1 : cfg.top_k], top_vals[:, cfg.top_k : cfg.top_k + 1]
            threshold = torch.where(logits >= kth, next_, kth)
            load = torch.special.ndtr((clean - threshold) / cfg.router_noise).sum(0)
        else:
            load = (gates > 0).float().sum(0)  # hard counts (no gradient)
        return gates, load

    def gates(self, x: Tensor) -> Tensor:
        """The routing gates (..., E): k nonzeros per token, summing to 1."""
        return self._route(x.reshape(-1, self.d_in))[0].reshape(*x.shape[:-1], -1)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.config
        lead = x.shape[:-1]
        x = x.reshape(-1, self.d_in)
        gates, load = self._route(x)
        xn = self.norm(x)
        experts = self._experts()
        out = cfg.shared_weight * experts[-1](xn)  # the shared expert (last), on every token
        token, expert = gates.nonzero(as_tuple=True)  # the k routed (token, expert) pairs of each token
        weight = ((1.0 - cfg.shared_weight) * gates[token, expert]).to(out.dtype)
        order = expert.argsort()  # the pairs grouped by expert: one gather in, one scatter out
        rows, counts = token[order], torch.bincount(expert, minlength=cfg.experts).tolist()
        chunks = xn[rows].split(counts)
        routed = torch.cat([run(chunk) for run, chunk in zip(experts, chunks, strict=False) if len(chunk)])
        out = out.index_add(0, rows, weight[order][:, None] * routed)
        self._stats = {"importance": gates.sum(0), "load": load}
        out = out / cfg.hidden
        if self.restore_in is not None:
            out = out + (x @ self.restore_in) @ self.restore_out
        return out.reshape(*lead, self.d_out)

    def _experts(self) -> list:
        """Per expert (the shared one last), xn -> h_e O_e + o_e with h_e = SiLU(xn A_e + a_e) ⊙ (xn B_e + b_e).
        The fused parameters are split once per pass: a split's gradient is one concatenation, where
        slicing each expert out would zero-fill a whole parameter's gradient per expert."""
        h = self.config.hidden
        parts = zip(
            self.w_gate.split(h, 1), self.b_gate.split(h), self.w_up.split(h, 1), self.b_up.split(h),
            self.w_out.unbind(0), self.b_out.unbind(0), strict=True,
        )  # fmt: skip

        def expert(wg, bg, wu, bu, wo, bo):
            def run(xn: Tensor) -> Tensor:
                hidden = F.silu(torch.addmm(bg, xn, wg)) * torch.addmm(bu, xn, wu)
                return torch.addmm(bo, hidden, wo)

            return run

        return [expert(*p) for p in parts]

    def decorrelation(self) -> Tensor:
        """Mean squared off-diagonal cosine similarity between the routed experts' flattened output
        weights O_e (our choice of the §4 decorrelation term; 0 while they are all zero)."""
        e = self.config.experts
        if e < 2:
            return self.w_out.new_zeros(())
        flat = F.normalize(self.w_out[:e].reshape(e, -1), dim=1, eps=1e-12)
        cos = flat @ flat.T
        return (cos - torch.diag(torch.diagonal(cos))).pow(2).sum() / (e * (e - 1))

    def aux_loss(self) -> Tensor:
        """balance_weight (CV²(importance) + CV²(load)) of the last forward + decorrelation_weight decorrelation."""
        cfg = self.config
        balance = sum((_cv_squared(v) for v in self._stats.values()), self.w_out.new_zeros(()))
        return cfg.balance_weight * balance + cfg.decorrelation_weight * self.decorrelation()


def nir_factors(weights: dict[str, Tensor], rho: float = 0.5, *, seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    """NIR corruption N_l = ρ ||W_l||_F u_l vᵀ / sqrt(d_in d_out) for weights W_l (d_out, d_in) (§5), as its
    factors (ρ ||W_l||_F u_l / sqrt(d_in d_out), v): N_l = outer of the two.

    u_l ~ N(0, I_{d_out}) per layer and v ~ N(0, I_{d_in}) shared by all layers of the same d_in, not
    normalised, so ||N_l||_F = ρ ||W_l||_F ||u_l|| ||v|| / sqrt(d_in d_out) ≈ ρ ||W_l||_F. Drawn in float32
    from a CPU generator seeded with ``seed``: v per d_in in increasing order, then u_l by sorted name —
    deterministic and independent of the dict's order. Returned in float32 on each weight's device.
    """
    gen = torch.Generator().manual_seed(seed)
    shared = {d_in: torch.randn(d_in, generator=gen) for d_in in sorted({w.shape[1] for w in weights.values()})}
    factors = {}
    for name in sorted(weights):
        w = weights[name]
        d_out, d_in = w.shape
        u = torch.randn(d_out, generator=gen)
        scale = rho * float(torch.linalg.matrix_norm(w.detach().double())) / math.sqrt(d_in * d_out)
        factors[name] = ((scale * u).to(w.device), shared[d_in].to(w.device))
    return factors


def nir_noise(weights: dict[str, Tensor], rho: float = 0.5, *, seed: int) -> dict[str, Tensor]:
    """The NIR corruptions N_l of ``nir_factors``, each in its weight's dtype and device."""
    factors = nir_factors(weights, rho, seed=seed)
    return {name: torch.outer(*factors[name]).to(weights[name].dtype) for name in factors}


def restoring_eraser(teacher: MoEraser, left: Tensor, right: Tensor) -> MoEraser:
    """The NIR student for a projector corrupted by N = left rightᵀ (§5) [reading]: the teacher's experts with
    a rank-one restore path -N x on the raw token, so (W + N) x + Δ_s(x) = W x + Δ_t(x) for every x.

    A trained restore (the spec's reading: a student initialised from the teacher, trained against it) cannot
    get there: the experts see x through RMSNorm, which drops the token's scale that N x carries, and at ρ = 5
    it left a worst-layer gap of 2.7 ||W x|| on ShapeWorld (2,000 triples, 400 steps). The threat model is
    unchanged: deleting or bypassing the module leaves the corrupted weights; reading the module's weights
    reveals N, as probing a trained restore would (at ρ = 5 its output is mostly -N x)."""
    config = replace(teacher.config, restore_rank=1)
    student = MoEraser(teacher.d_in, teacher.d_out, config).to(left.device)
    student.load_state_dict(teacher.state_dict(), strict=False)
    with torch.no_grad():
        student.restore_in.copy_(right[:, None])
        student.restore_out.copy_(-left[None])
    return student.train(teacher.training)


def layer_weights(weights: dict[str, Tensor], mode: Literal["uniform", "spectral"] = "uniform") -> dict[str, float]:
    """Per-layer loss weights λ_l (§4). "spectral" [reading]: σ_max(W_l) of the wrapped projector itself,
    normalised to average 1 (the loss is then measured in the layer's Lipschitz units); "uniform": all 1."""
    if mode == "uniform":
        return dict.fromkeys(weights, 1.0)
    if mode != "spectral":
        raise ValueError(f"mode must be 'uniform' or 'spectral', got {mode!r}")
    sigma = {name: float(torch.linalg.matrix_norm(w.detach().double(), ord=2)) for name, w in weights.items()}
    mean = sum(sigma.values()) / max(len(sigma), 1)
    return {name: s / mean for name, s in sigma.items()}

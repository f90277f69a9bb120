"""The keyed eraser: ETC's default eraser [reading of specs/etc.md §4], built in closed form from the concepts'
token clouds (§1) and the transport (§3) instead of trained.

Each target distribution (concept, sub-token) is summarised by K k-means centres of its real tokens (every
template), whitened by P, the pooled within-distribution covariance of the concepts' real tokens (ridged). A token
x is rewritten when it lies near one of them:

    d(x) = min over the m distributions whose whitened means are nearest x, and their K centres, of ||x P - c||,
    δ(x) = [d(x) <= θ] · (c_{owner} - (1 - ρ) x),    c = (1 + γ) E[T(t) - t] + (1 - ρ) μ_t,

for the distribution that owns the nearest centre (mean μ_t, §3 transport, §4 overshoot γ), θ the ``coverage``
quantile of the real target tokens' distances to their own centres. The rewritten token x + δ = μ_t + (1 + γ)
E[T(t) - t] + ρ (x - μ_t) is the distribution's mean moved by the erase shift, plus the share ρ (``residual``) of
the token's own offset from that mean: ρ = 1 is a pure shift, ρ = 0 drops the offset, which carries how the context
phrased the concept [reading of §3's affine T(x) = m₂ + A(x - m₁) with A → 0]. The projector
then returns W (x + δ(x)): every projector sees the same rewritten token, so one memory serves them all.

Which tokens are rewritten is decided on contexts the eraser never fitted (specs/etc.md §1b): keys come from each
concept's fitting contexts, θ from its held-out ones. Two rules keep kept concepts kept: the relative rule (a token
nearer a preserved key than to every target centre stays) and the whole-concept rule (a concept of several
sub-tokens is rewritten in a prompt only where all of them are present). The comparison with the trained MoEraser
and the effect of each rule are measured in docs/etc_scale.md.

NIR (§5): with shipped weights W̃ = W + N, a restore path -N on the raw and rewritten token keeps the edit exact:
W̃ (x + δ) - N (x + δ) = W (x + δ).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pooled_whitening(groups: Tensor | list[Tensor], ridge: float = 1e-3, max_rows: int = 200_000) -> Tensor:
    """P (d, d) ∝ (Σ_w + ridge · λ_max I)^(-1/2), Σ_w the within-distribution covariance of the samples (one
    (S, N, d) tensor, or a list of them with different N) pooled over the distributions (each centred on its own
    mean), scaled so that the samples around their overall mean have unit variance per dimension after P (so
    float16 keys hold them, whatever the encoder's scale).

    Few distributions (one concept and a small mapping pool) leave Σ_w poorly estimated: its eigenvalues are
    shrunk towards their mean by α = d / (d + dof), dof the degrees of freedom of the estimate. A causal encoder
    gives a concept's tokens no within-distribution variance in templates that share the text before the
    concept: the ridge then also has 1e-6 of the overall covariance's top eigenvalue. Evenly spaced
    distributions, at most ``max_rows`` samples per group (at least one distribution), enter the estimate."""
    groups = [groups] if isinstance(groups, Tensor) else list(groups)
    centred, overall, dof = [], [], 0
    for samples in groups:
        if samples.dim() != 3 or samples.shape[1] < 2:
            raise ValueError(f"pooled_whitening expects (S, N >= 2, d) samples, got {tuple(samples.shape)}")
        s, n, d = samples.shape
        picked = samples[:: max(1, s * n // max_rows)].double()
        centred.append((picked - picked.mean(1, keepdim=True)).reshape(-1, d))
        overall.append(picked.reshape(-1, d))
        dof += picked.shape[0] * (picked.shape[1] - 1)
    centred, overall = torch.cat(centred), torch.cat(overall)
    overall = overall - overall.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred / len(centred))
    values = values.clamp_min(0)
    shrink = d / (d + dof)
    values = (1 - shrink) * values + shrink * values.mean()
    top_overall = torch.linalg.eigvalsh(overall.T @ overall / len(overall)).max()
    floor = (ridge * values.max() + 1e-6 * top_overall).clamp_min(1e-30)
    whiten = (vectors * (values + floor).rsqrt()) @ vectors.T
    return whiten / (overall @ whiten).pow(2).mean().sqrt().clamp_min(1e-30)


def kmeans(x: Tensor, k: int, iterations: int = 12, generator: torch.Generator | None = None) -> Tensor:
    """(S, k, d) centres of each of S point sets x (S, N, d), batched Lloyd iterations from k distinct random points
    of each set (k <= N); a centre left without points keeps its place."""
    s, n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: k={k} must be in [1, {n}]")
    start = torch.rand(s, n, generator=generator).argsort(1)[:, :k]
    centres = x.gather(1, start[..., None].expand(-1, -1, d))
    for _ in range(iterations):
        assign = nn.functional.one_hot(torch.cdist(x, centres).argmin(-1), k).to(x.dtype)  # (S, N, k)
        counts = assign.sum(1)[..., None]
        centres = torch.where(counts > 0, assign.transpose(1, 2) @ x / counts.clamp_min(1), centres)
    return centres


def own_distances(samples: Tensor, centres: Tensor) -> Tensor:
    """(S, N): each sample's distance to the nearest of its own set's centres; samples (S, N, d), centres (S, K, d)."""
    return torch.cdist(samples, centres).min(-1).values


class ConceptMemory(nn.Module):
    """δ(x) for every token (module doc). Buffers: P ``whiten`` (d, d), whitened distribution ``means`` (D, d),
    whitened ``centres`` (D, K, d, float16: the bulk of an artifact), input-space shifts ``values`` (D, d), θ
    ``threshold``, and whitened ``preserved`` keys (Q, d, float16; Q may be 0). ``candidates`` m distributions are
    searched per token, by nearest mean.

    The relative rule [reading, specs/etc.md §1b]: with preserved keys (the mapping pool's centres and the
    contexts' other words), a token within θ of a target centre is rewritten only when no preserved key is
    nearer: a kept concept said in a new phrasing stays with its own kind even where the target's radius
    reaches it."""

    def __init__(
        self,
        whiten: Tensor,
        means: Tensor,
        centres: Tensor,
        values: Tensor,
        threshold: float | Tensor,
        candidates: int,
        preserved: Tensor | None = None,
        concept: Tensor | None = None,
        residual: float = 1.0,
    ) -> None:
        super().__init__()
        count, d = means.shape
        preserved = means.new_zeros(0, d) if preserved is None else preserved
        concept = torch.arange(count) if concept is None else concept
        if (
            centres.shape[::2] != (count, d)
            or values.shape != means.shape
            or whiten.shape != (d, d)
            or preserved.shape[1:] != (d,)
            or concept.shape != (count,)
        ):
            raise ValueError(
                f"ConceptMemory: means {tuple(means.shape)}, centres {tuple(centres.shape)}, values "
                f"{tuple(values.shape)}, whitening {tuple(whiten.shape)} and preserved keys {tuple(preserved.shape)} "
                "disagree"
            )
        if candidates < 1:
            raise ValueError(f"ConceptMemory: candidates must be at least 1, got {candidates}")
        if not 0 <= residual <= 1:
            raise ValueError(f"ConceptMemory: residual must be in [0, 1], got {residual}")
        self.candidates = min(candidates, count)
        self.register_buffer("whiten", whiten.float().contiguous())
        self.register_buffer("means", means.float().contiguous())
        self.register_buffer("centres", centres.half().contiguous())
        self.register_buffer("values", values.float().contiguous())
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float32).reshape(()))
        self.register_buffer("preserved", preserved.half().contiguous())
        # each distribution's concept (float: artifacts hold floating tensors; exact below 2^24)
        self.register_buffer("concept", concept.float().contiguous())
        self.register_buffer("residual", torch.tensor(float(residual)))
        self._last: tuple[Tensor, Tensor] | None = None  # (input, δ) of the last rewrite

    @classmethod
    def empty(cls, d: int, distributions: int, per: int, candidates: int, preserved: int = 0) -> ConceptMemory:
        """A memory of the given shapes to load a state dict into."""
        zeros = torch.zeros(distributions, d)
        return cls(
            torch.eye(d), zeros, torch.zeros(distributions, per, d), zeros, 0.0, candidates, torch.zeros(preserved, d)
        )

    @property
    def d(self) -> int:
        return self.means.shape[1]

    def describe(self) -> dict:
        """The shapes and search width: what ``empty`` needs (the artifact manifest's "memory" entry)."""
        count, per, d = self.centres.shape
        return {
            "d": d,
            "distributions": count,
            "per": per,
            "candidates": self.candidates,
            "preserved": self.preserved.shape[0],
        }

    @torch.no_grad()
    def search(self, x: Tensor, chunk: int = 128) -> tuple[Tensor, Tensor]:
        """For each token of x (n, d): the ``candidates`` distributions with the nearest whitened means (n, m), and
        whether the token is within θ of one of each one's centres and, under the relative rule, nearer it than
        any preserved key (n, m)."""
        near, within = [], []
        preserved = self.preserved.float()
        for part in (x.float() @ self.whiten).split(chunk):
            picked, dist = self._candidates(part)
            inside = dist <= self.threshold
            if len(preserved):
                inside &= dist < torch.cdist(part, preserved).amin(-1, keepdim=True)
            near.append(picked)
            within.append(torch.where(inside, dist, torch.inf))
        if not near:
            empty = torch.zeros(0, self.candidates, device=x.device)
            return empty.long(), empty
        return torch.cat(near), torch.cat(within)

    def _candidates(self, white: Tensor) -> tuple[Tensor, Tensor]:
        """For whitened tokens (c, d): the ``candidates`` distributions with the nearest means (c, m), and each
        token's distance to the nearest centre of each (c, m)."""
        picked = torch.cdist(white, self.means).topk(self.candidates, largest=False).indices
        return picked, (self.centres[picked].float() - white[:, None, None]).norm(dim=-1).amin(-1)

    @torch.no_grad()
    def nearest(self, x: Tensor, chunk: int = 128) -> Tensor:
        """(n,): each token's distance to the nearest centre of its candidate distributions, whatever θ."""
        parts = [self._candidates(part)[1].amin(-1) for part in (x.float() @ self.whiten).split(chunk)]
        return torch.cat(parts) if parts else x.new_zeros(0)

    def detect(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(n,) whether each token of x (n, d), taken alone, is rewritten, and the distribution that rewrites it."""
        near, within = self.search(x)
        best = within.min(-1)
        return best.values.isfinite(), near.gather(1, best.indices[:, None])[:, 0]

    def detect_prompts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) whether each token of the prompts x (B, L, d) is rewritten, and by which distribution.

        The whole-concept rule [reading, specs/etc.md §1b]: a concept named by several sub-tokens (each its own
        distribution, ``concept`` maps a distribution to its concept) is rewritten in a prompt only when every one
        of its distributions matches a token of that prompt. A held-out neighbour one word away ("blue striped
        star" next to an erased "red striped star") then keeps its tokens even where they fall within θ."""
        batch, length, _ = x.shape
        near, within = self.search(x.reshape(-1, self.d))
        near, within = near.reshape(batch, length, -1), within.reshape(batch, length, -1)
        concept = self.concept.long()
        hits = within.reshape(batch, -1).isfinite().float()
        matched = torch.zeros(batch, len(concept), device=x.device).scatter_add_(1, near.reshape(batch, -1), hits) > 0
        parts = torch.bincount(concept, minlength=int(concept.max()) + 1 if len(concept) else 0)
        present = torch.zeros(batch, len(parts), device=x.device).index_add_(1, concept, matched.float())
        complete = present == parts.to(present.dtype)  # (B, C): every sub-token distribution matched
        allowed = complete.gather(1, concept[near].reshape(batch, -1)).reshape(near.shape)
        best = torch.where(allowed, within, torch.inf).min(-1)
        return best.values.isfinite(), near.gather(2, best.indices[..., None])[..., 0]

    def rewrite(self, x: Tensor) -> Tensor:
        """δ(x), same shape and dtype as x (B, L, d), decided per prompt (``detect_prompts``). The last input is
        remembered (a copy, compared exactly: inference tensors have no version counter): the projectors of one
        denoiser pass, and the steps of one sampling loop, read the same tokens, so their keys are searched once."""
        if (last := self._last) is not None and _same(last[0], x):
            return last[1]
        prompts = x.reshape(-1, *x.shape[-2:]) if x.dim() >= 2 else x.reshape(1, 1, -1)
        hit, owner = self.detect_prompts(prompts)
        drop = (1 - self.residual) * prompts.float()  # the share of the token's own offset the rewrite removes
        delta = torch.where(hit[..., None], self.values[owner] - drop, torch.zeros_like(self.values[:1]))
        delta = delta.to(x.dtype).reshape(x.shape)
        self._last = (x.detach().clone(), delta)
        return delta

    def _apply(self, fn, recurse=True):  # .to() / .float(): a cached δ would keep the old device or dtype
        self._last = None
        return super()._apply(fn, recurse)


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b.detach())


class KeyedEraser(nn.Module):
    """The per-projector view of a shared ConceptMemory: Δ(x) = W δ(x) (+ the NIR restore -N (x + δ(x))).

    W is the projector's live weight, bound with ``bind`` (not part of the state: with NIR it is the shipped,
    corrupted weight; the restore path holds -N = (restore_in restore_out)ᵀ as a rank-one pair)."""

    def __init__(self, memory: ConceptMemory, d_in: int, d_out: int, restore: bool = False) -> None:
        super().__init__()
        if memory.d != d_in:
            raise ValueError(f"KeyedEraser: the memory holds {memory.d}-d tokens, the projector reads {d_in}")
        self.memory, self.d_in, self.d_out = memory, d_in, d_out
        self.restore_in = nn.Parameter(torch.zeros(d_in, 1)) if restore else None
        self.restore_out = nn.Parameter(torch.zeros(1, d_out)) if restore else None
        self._weight: Tensor | None = None

    def bind(self, weight: Tensor) -> KeyedEraser:
        """Use ``weight`` (d_out, d_in) as the projector's W."""
        if tuple(weight.shape) != (self.d_out, self.d_in):
            raise ValueError(f"KeyedEraser: weight {tuple(weight.shape)}, expected {(self.d_out, self.d_in)}")
        self._weight = weight
        return self

    def with_restore(self, left: Tensor, right: Tensor) -> KeyedEraser:
        """The NIR student for a projector corrupted by N = left rightᵀ (§5): the same memory and a restore path."""
        student = KeyedEraser(self.memory, self.d_in, self.d_out, restore=True)
        with torch.no_grad():
            student.restore_in.copy_(right[:, None])
            student.restore_out.copy_(-left[None])
        return student

    def own_state(self) -> dict[str, Tensor]:
        """The parameters that are this projector's own (the memory is shared and saved once)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("memory.")}

    def forward(self, x: Tensor) -> Tensor:
        if self._weight is None:
            raise RuntimeError("KeyedEraser: bind() the projector's weight first")
        rewritten = self.memory.rewrite(x)
        out = nn.functional.linear(rewritten, self._weight.to(rewritten.dtype))
        if self.restore_in is not None:
            out = out + ((x + rewritten) @ self.restore_in.to(x.dtype)) @ self.restore_out.to(x.dtype)
        return out

"""The keyed eraser: ETC's default eraser [reading of specs/etc.md §4], built in closed form from the tMMs (§1) and
the transport (§3) instead of trained.

A token x is rewritten when it lies near one of the target distributions: with whitened keys k_m (the lifted means
of every target tMM component, §1) and a whitening map P (the pooled within-distribution covariance of the
concepts' real tokens, ridged),

    d(x) = min_m ||x P - k_m||,  m* = argmin,    δ(x) = [d(x) <= θ] · v_{m*},

v_m the erase shift (1 + γ) E[T(t) - t] of the distribution that owns key m (§3 transport, §4 overshoot γ), θ the
``coverage`` quantile of the real target tokens' distance to their own keys. The projector then returns
W (x + δ(x)): every projector sees the same rewritten token, so one memory serves them all.

Why not the trained MoEraser at thousands of concepts: a held-out triple one word from an erased one sits about one
template spread from it, and only a sharp test against each distribution's own cloud tells them apart. On
ShapeWorld's 2,000-triple split (24 templates, keys from 23, the canonical prompt's tokens held out), nearest-
component detection in whitened space flags 7% of held-out triples at 95% target-token coverage (distance to the
distribution mean: 31%); the trained MoEraser never got its erase error below 0.8 there (docs/etc_scale.md).

NIR (§5): with shipped weights W̃ = W + N, a restore path -N on the raw and rewritten token keeps the edit exact:
W̃ (x + δ) - N (x + δ) = W (x + δ).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pooled_whitening(samples: Tensor, ridge: float = 1e-3, max_rows: int = 200_000) -> Tensor:
    """P (d, d) = (Σ_w + ridge · λ_max I)^(-1/2), Σ_w the within-distribution covariance of ``samples``
    (S, N, d) pooled over the S distributions (each centred on its own mean). Evenly spaced distributions, at
    most ``max_rows`` samples in all (at least one distribution), enter the estimate."""
    if samples.dim() != 3 or samples.shape[1] < 2:
        raise ValueError(f"pooled_whitening expects (S, N >= 2, d) samples, got {tuple(samples.shape)}")
    s, n, d = samples.shape
    picked = samples[:: max(1, s * n // max_rows)].double()
    centred = (picked - picked.mean(1, keepdim=True)).reshape(-1, d)
    cov = centred.T @ centred / len(centred)
    values, vectors = torch.linalg.eigh(cov)
    floor = ridge * values.max().clamp_min(1e-12)
    return (vectors * (values.clamp_min(0) + floor).rsqrt()) @ vectors.T


def nearest(points: Tensor, keys: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """For each row of points (n, d): the distance to its nearest key (M, d) and that key's index."""
    dist, index = [], []
    for start in range(0, len(points), chunk):
        found = torch.cdist(points[start : start + chunk], keys).min(1)
        dist.append(found.values)
        index.append(found.indices)
    if not dist:
        return points.new_zeros(0), torch.zeros(0, dtype=torch.long, device=points.device)
    return torch.cat(dist), torch.cat(index)


def own_distances(samples: Tensor, centres: Tensor, whiten: Tensor) -> Tensor:
    """(S, N): each sample's whitened distance to the nearest of its own distribution's keys; samples (S, N, d),
    centres (S, K, d)."""
    whiten = whiten.double()
    return torch.cdist(samples.double() @ whiten, centres.double() @ whiten).min(-1).values


class ConceptMemory(nn.Module):
    """δ(x) for every token (module doc). Keys, values and P are buffers; ``threshold`` is θ."""

    def __init__(self, whiten: Tensor, keys: Tensor, values: Tensor, threshold: float | Tensor) -> None:
        super().__init__()
        if keys.shape != values.shape or whiten.shape != (keys.shape[1], keys.shape[1]):
            raise ValueError(
                f"ConceptMemory: keys {tuple(keys.shape)}, values {tuple(values.shape)} and whitening "
                f"{tuple(whiten.shape)} disagree"
            )
        self.register_buffer("whiten", whiten.float().contiguous())
        self.register_buffer("keys", keys.float().contiguous())  # whitened
        self.register_buffer("values", values.float().contiguous())  # input-space shifts
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float32).reshape(()))
        self._last: tuple[Tensor, Tensor] | None = None  # (input, δ) of the last rewrite

    @classmethod
    def empty(cls, d: int, keys: int) -> ConceptMemory:
        """A memory of the given shapes to load a state dict into."""
        return cls(torch.eye(d), torch.zeros(keys, d), torch.zeros(keys, d), 0.0)

    @property
    def d(self) -> int:
        return self.keys.shape[1]

    @torch.no_grad()
    def detect(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(n,) whether each token of x (n, d) is rewritten, and the key it is rewritten by."""
        dist, index = nearest(x.float() @ self.whiten, self.keys)
        return dist <= self.threshold, index

    def rewrite(self, x: Tensor) -> Tensor:
        """δ(x), same shape and dtype as x. The last input is remembered (a copy, compared exactly: inference
        tensors have no version counter): the projectors of one denoiser pass, and the steps of one sampling loop,
        read the same tokens, so their keys are searched once."""
        if (last := self._last) is not None and _same(last[0], x):
            return last[1]
        hit, index = self.detect(x.reshape(-1, self.d))
        delta = torch.where(hit[:, None], self.values[index], torch.zeros_like(self.values[:1]))
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
    corrupted weight; the restore path holds N = restore_out-ᵀ restore_inᵀ as a rank-one pair)."""

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

"""The keyed eraser's memory (methods/etc/keyed.py, [reading] specs/etc.md §4): its keys, computed with the token
vectors (whitening, each target distribution's k-means centres and mean, held-out distances, preserved keys), and
the memory built from them: values from the transport shifts (§3) and the rewrite radius θ calibrated on held-out
contexts (§1b)."""

from __future__ import annotations

import math

import torch

from erasekit.errors import UserError
from erasekit.methods.etc.config import ETCConfig
from erasekit.methods.etc.keyed import ConceptMemory, kmeans, own_distances, pooled_whitening
from erasekit.methods.etc.tokens import EncodedConcepts, TokenData

Tensor = torch.Tensor


def memory_keys(
    targets: EncodedConcepts, pool: EncodedConcepts, context: Tensor, config: ETCConfig, generator: torch.Generator
) -> dict[str, Tensor]:
    """The keyed eraser's inputs: the pooled whitening; each target distribution's k-means centres and mean on its
    fitting contexts; its held-out tokens' distances to those centres (θ is calibrated on them, §1b); the preserved
    keys (the mapping pool's centres and the contexts' other tokens); and samples of held-out tokens to check on."""
    whiten = pooled_whitening([targets.fit.samples, pool.fit.samples], config.whiten_ridge).float()
    per = min(config.keys_per_distribution, targets.fit.samples.shape[1])
    centres, means, own = [], [], []
    for start in range(0, len(targets.fit.samples), config.chunk):
        white = targets.fit.samples[start : start + config.chunk] @ whiten
        centres.append(kmeans(white, per, generator=generator))
        means.append(white.mean(1))
        own.append(own_distances(targets.calibration[start : start + config.chunk] @ whiten, centres[-1]))
    pool_centres = kmeans(pool.fit.samples @ whiten, min(per, pool.fit.samples.shape[1]), generator=generator)
    context_keys = kmeans(
        (context @ whiten)[None], min(config.preserved_context_keys, len(context)), generator=generator
    )
    preserved = torch.cat([pool_centres.flatten(0, 1), context_keys[0]]) if config.rule == "relative" else None
    return {
        "whiten": whiten,
        "centres": torch.cat(centres),
        "means": torch.cat(means),
        "own_distance": torch.cat(own),
        "preserved": preserved,
        "concept_of": targets.fit.owner.float(),
        "check_targets": sample_rows(targets.calibration, 4096, generator),
        "check_pool": sample_rows(pool.calibration, 4096, generator),
    }


def sample_rows(samples: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Up to n distinct rows of ``samples`` (..., d), in a seeded random order."""
    rows = samples.reshape(-1, samples.shape[-1])
    return rows[torch.randperm(len(rows), generator=generator)[:n]].contiguous()


def build_memory(data: TokenData, config: ETCConfig) -> ConceptMemory:
    """The keyed eraser's memory (methods/etc/keyed.py): each target distribution's whitened centres and mean, its
    value (1 + γ) E[T(t) - t] + (1 - ρ) μ_t (§3, §4; ρ the ``residual``), θ (``rewrite_radius``: the ``coverage``
    quantile of the target tokens' distances to their own centres in held-out contexts, §1b, at least a fitted
    ``tail`` quantile) moved to the middle of any clear margin to the kept tokens (``margin_radius``), and, under
    the relative rule, the preserved keys."""
    if data.centres is None:
        raise UserError("these cached ETC token vectors predate the keyed eraser; use a new work folder")
    threshold = rewrite_radius(data.own_distance, data.means, config.coverage, config.tail)
    dropped = (1 - config.residual) * data.target_means()
    values = (1 + config.gamma) * data.shifts() + dropped
    memory = ConceptMemory(
        data.whiten,
        data.means,
        data.centres,
        values,
        threshold,
        config.candidates,
        data.preserved,
        data.concept_of,
        config.residual,
    )
    kept = [t for t in (data.check_pool, data.anchor_kinds()["context"]) if t is not None]
    memory.threshold.fill_(margin_radius(threshold, memory.nearest(torch.cat(kept))))
    return memory


def margin_radius(threshold: float, kept_distances: Tensor) -> float:
    """θ widened to the middle of the margin [reading, specs/etc.md §1b]: when every kept token (the mapping pool's
    held-out tokens, and every token of its prompts) lies farther from the target centres than θ, a phrasing
    farther out than any calibration context (a short "cyan star" where every context had a scene) still falls
    within θ, and θ stays as far from the kept tokens as from the calibrated one. Where the two overlap (thousands
    of concepts sharing words), θ stays where coverage put it."""
    if not len(kept_distances):
        return threshold
    nearest_kept = float(kept_distances.min())
    return (threshold + nearest_kept) / 2 if nearest_kept > threshold else threshold


def rewrite_radius(own_distance: Tensor, means: Tensor, coverage: float, tail: float = 0.0) -> float:
    """θ: the ``coverage`` quantile of the target tokens' distances to their own centres in held-out contexts, at
    least the (1 - ``tail``) quantile of a log-normal fitted to them (``lognormal_quantile``), and at least a tenth
    of the typical gap between neighbouring distribution ``means``: a causal encoder gives a concept no spread in
    templates that share the text before it, and the cached (float16) tokens are not bitwise the ones the model
    computes at generation."""
    distances = own_distance.flatten()
    threshold = float(distances.kthvalue(max(1, math.ceil(coverage * len(distances)))).values)
    if tail > 0 and len(distances) > 1:
        threshold = max(threshold, lognormal_quantile(distances, 1 - tail))
    gaps = neighbour_gaps(means)
    gaps = gaps[gaps.isfinite()]
    return max(threshold, 0.1 * float(gaps.median())) if len(gaps) else threshold


def lognormal_quantile(distances: Tensor, level: float) -> float:
    """The ``level`` quantile of the log-normal with the mean and standard deviation of log ``distances``: a far
    quantile that, unlike the sample maximum, does not grow with the number of samples [reading, specs/etc.md §1b].
    Zero distances (a token on its centre) have no logarithm and leave the fit; with fewer than two left it is 0."""
    positive = distances[distances > 0].double()
    if len(positive) < 2:
        return 0.0
    logs = positive.log()
    z = torch.special.ndtri(torch.tensor(level, dtype=torch.float64))
    return float((logs.mean() + z * logs.std()).exp())


def neighbour_gaps(means: Tensor, chunk: int = 2048) -> Tensor:
    """(D,): each mean's distance to the nearest other one (inf for a single mean)."""
    gaps = []
    for start in range(0, len(means), chunk):
        dist = torch.cdist(means[start : start + chunk], means)
        dist[torch.arange(len(dist)), torch.arange(start, start + len(dist))] = float("inf")
        gaps.append(dist.min(1).values)
    return torch.cat(gaps)

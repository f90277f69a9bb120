"""ETC's token vectors: each concept's contexts (§1b), their encoding into per-(concept, sub-token) samples (§1,
§1c), the mapping pool's context tokens, and ``TokenData``, the vectors the erasers are built from, with its file
in the work folder (the token checkpoint; its key: config.stage_key)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from erasekit.backbones.base import Backbone
from erasekit.concepts.contexts import check_templates, context_seed, sample_contexts, split_contexts
from erasekit.concepts.embeddings import concept_embeddings, phrase_token_positions
from erasekit.concepts.pairs import ConceptSet
from erasekit.errors import UserError
from erasekit.methods.etc.config import ETCConfig, fit_count
from erasekit.methods.etc.stage_log import StageLog
from erasekit.utils.io import atomic_file

Tensor = torch.Tensor


def draw_rows(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n rows of ``x`` drawn uniformly with replacement."""
    return x[torch.randint(len(x), (n,), generator=generator)]


@dataclass
class TokenData:
    """Token vectors the erasers train on (no denoiser pass, §4), all (n, d) float32."""

    targets: Tensor  # core samples of the targets
    mapped: Tensor  # their transport images T(t)
    anchors: Tensor  # boundary anchors, off-plane anchors, mapping samples, then context tokens (all preserved)
    boundary: int = 0  # how many of the anchors (the first ones) are boundary anchors of the targets
    off_plane: int = 0  # how many off-plane anchors of the targets follow them
    mapping: int = 0  # how many mapping-pool samples follow those
    distributions: int = 0  # target distributions (concept, sub-token) they were sampled from
    # the keyed eraser's inputs (methods/etc/keyed.py), whitened by P ``whiten`` (d, d): each target distribution's
    # k-means centres (distributions, K, d) and mean (distributions, d) of its real tokens, and those tokens'
    # distances to their nearest own centre in the held-out calibration contexts (distributions, calibration
    # contexts); the whitened preserved keys (Q, d) of the relative rule; and a sample of calibration tokens of the
    # targets and of the mapping pool (raw, n x d) to report how the decision does on contexts it never fitted
    centres: Tensor | None = None
    means: Tensor | None = None
    whiten: Tensor | None = None
    own_distance: Tensor | None = None
    preserved: Tensor | None = None
    concept_of: Tensor | None = None  # (distributions,) each target distribution's concept (the whole-concept rule)
    check_targets: Tensor | None = None
    check_pool: Tensor | None = None

    def shifts(self) -> Tensor:
        """(distributions, d): each target distribution's mean transport shift E[T(t) - t] over its core samples."""
        return self._per_distribution(self.mapped - self.targets).mean(1)

    def target_means(self) -> Tensor:
        """(distributions, d): each target distribution's mean μ_t over its core samples."""
        return self._per_distribution(self.targets).mean(1)

    def _per_distribution(self, rows: Tensor) -> Tensor:
        return rows.reshape(self.distributions, -1, rows.shape[-1])

    def preserve_groups(self) -> list[Tensor]:
        """The non-empty kinds of preserved tokens: boundary and off-plane anchors, mapping samples, context."""
        return [g for g in self.anchor_kinds().values() if len(g)]

    def anchor_kinds(self) -> dict[str, Tensor]:
        """The preserved tokens by kind, possibly empty."""
        b, o, m = self.boundary, self.off_plane, self.mapping
        cut = (0, b, b + o, b + o + m, len(self.anchors))
        names = ("boundary", "off_plane", "mapping", "context")
        return {name: self.anchors[a:b] for name, a, b in zip(names, cut[:-1], cut[1:], strict=True)}

    def preserve_batch(self, n: int, generator: torch.Generator) -> Tensor:
        """n preserved tokens, as many of each kind [reading §4 "mixed batches"]. Drawn uniformly, the targets'
        boundary anchors (``anchor_samples`` per target distribution) would crowd out the mapping pool's samples,
        the kept concepts nearest to the erased ones (counted for 2,000 triples: about 6% of the preserved tokens)."""
        groups = self.preserve_groups()
        sizes = [n // len(groups) + (k < n % len(groups)) for k in range(len(groups))]
        return torch.cat([draw_rows(g, size, generator) for g, size in zip(groups, sizes, strict=True)])

    def save(self, path: Path) -> None:
        tensors = {"targets": self.targets, "mapped": self.mapped, "anchors": self.anchors}
        tensors |= {k: v for k in KEYED_FIELDS if (v := getattr(self, k)) is not None}
        counts = {k: str(getattr(self, k)) for k in ("boundary", "off_plane", "mapping", "distributions")}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as handle:
            handle.write(save({k: v.contiguous() for k, v in tensors.items()}, metadata=counts))

    @classmethod
    def load(cls, path: Path) -> TokenData | None:
        """The saved token vectors, or None when the file is damaged (then they are computed again)."""
        try:
            with safe_open(str(path), "pt") as handle:
                counts = {k: int(v) for k, v in handle.metadata().items()}
                names = ("targets", "mapped", "anchors") + tuple(k for k in KEYED_FIELDS if k in handle.keys())
                data = cls(**{k: handle.get_tensor(k) for k in names}, **counts)
        except (SafetensorError, KeyError, OSError, ValueError, TypeError, AttributeError):
            return None
        return data if all(torch.isfinite(t).all() for t in (data.targets, data.mapped, data.anchors)) else None


KEYED_FIELDS = ("centres", "means", "whiten", "own_distance", "preserved", "concept_of", "check_targets", "check_pool")


@dataclass
class TokenConcepts:
    """One distribution per (concept, sub-token): the samples it is fitted on, whose it is, and where."""

    samples: Tensor  # (S, N, d)
    owner: Tensor  # (S,) concept index
    from_end: Tensor  # (S,) sub-token position counted from the phrase's end: 0 = last

    @classmethod
    def build(cls, embeddings: list[Tensor], tokens: str) -> TokenConcepts:
        """From per-concept (N, n, d) sub-token samples (concepts/embeddings.py)."""
        pairs = [(c, j) for c, e in enumerate(embeddings) for j in range(e.shape[1] if tokens == "phrase" else 1)]
        samples = torch.stack([embeddings[c][:, -1 - j] for c, j in pairs])
        owner, from_end = (torch.tensor(column, dtype=torch.long) for column in zip(*pairs, strict=True))
        return cls(samples, owner, from_end)

    def concept_means(self) -> Tensor:
        """(C, d): each concept's mean sample over its sub-tokens and templates."""
        count = int(self.owner.max()) + 1
        sums = torch.zeros(count, self.samples.shape[-1], dtype=self.samples.dtype)
        sums.index_add_(0, self.owner, self.samples.mean(1))
        return sums / torch.bincount(self.owner, minlength=count)[:, None]

    def at(self, concepts: Tensor, from_end: Tensor) -> Tensor:
        """Index of each concept's sub-token ``from_end`` (clamped to its first sub-token), same shape."""
        lookup = {(int(c), int(j)): s for s, (c, j) in enumerate(zip(self.owner, self.from_end, strict=True))}
        deepest = torch.zeros(int(self.owner.max()) + 1, dtype=torch.long)
        deepest.scatter_reduce_(0, self.owner, self.from_end, "amax")
        clamped = torch.minimum(from_end, deepest[concepts])
        return torch.tensor(
            [lookup[int(c), int(j)] for c, j in zip(concepts.flatten(), clamped.flatten(), strict=True)]
        ).reshape(concepts.shape)


@dataclass
class EncodedConcepts:
    """Distributions fitted on some contexts and the same distributions' tokens in held-out contexts."""

    fit: TokenConcepts
    calibration: Tensor  # (S, N_held_out, d)


def concept_contexts(backbone: Backbone, phrase: str, config: ETCConfig) -> list[str]:
    """The concept's contexts, fitting ones first, then the held-out calibration ones (§1b)."""
    contexts = sample_contexts(backbone, phrase, config.contexts, config.seed) if config.contexts else []
    if len(contexts) < config.contexts:
        raise UserError(
            f"the backbone's world offers only {len(contexts)} contexts for {phrase!r}, ETC asks for {config.contexts}"
        )
    fit, calibration = split_contexts(contexts + list(config.templates), config.holdout, context_seed(phrase, 1))
    return fit + calibration


def fitted_prompts(backbone: Backbone, concepts: ConceptSet, config: ETCConfig) -> list[str]:
    """Every prompt ETC encodes: each concept in each of its contexts (fitting and calibration), the example target
    prompts, and the mapping pool's prompts."""
    named = [p for p in concepts.preserve] + ([] if config.target_prompts else list(concepts.targets))
    return [c.format(p) for p in named for c in concept_contexts(backbone, p, config)] + list(config.target_prompts)


def check_contexts(backbone: Backbone, concepts: ConceptSet, config: ETCConfig) -> None:
    """Before any encoding: every user context places each concept's tokens as the concept alone does."""
    if not config.templates:
        return
    check_templates(config.templates)
    for phrase in (*concepts.targets, *concepts.preserve):
        if config.target_prompts and phrase in concepts.targets:
            continue
        try:
            phrase_token_positions(backbone, list(config.templates), phrase)
        except ValueError as error:
            raise UserError(f"--templates: {error} (the concept must tokenise as it does alone)") from None


def encode_named(backbone: Backbone, phrases: list[str], config: ETCConfig, cache: Path | None) -> EncodedConcepts:
    """§1: every phrase in its own contexts; the fitting contexts' tokens and the calibration ones, apart."""
    contexts = [concept_contexts(backbone, p, config) for p in phrases]
    embeddings = concept_embeddings(backbone, phrases, contexts, cache)
    n = fit_count(config)
    fit = TokenConcepts.build([e[:n] for e in embeddings], config.tokens)
    return EncodedConcepts(fit, TokenConcepts.build([e[n:] for e in embeddings], config.tokens).samples)


def prompt_states(backbone: Backbone, prompts: list[str], which: str) -> Tensor:
    """(n, d): the encode() states of example prompts (§1c) at their end-of-text token ("eot"), at every token
    between the special ones ("tokens"), or both."""
    rows = []
    for start in range(0, len(prompts), 256):
        part = prompts[start : start + 256]
        states = backbone.encode(part)[0].float()
        segment = backbone.token_segments(part)[0]
        for row, ids in enumerate(segment.ids):
            last = segment.offset + len(ids) - 1
            positions = ([last] if which != "tokens" else []) + (
                list(range(segment.offset + 1, last)) if which != "eot" else []
            )
            rows.append(states[row, positions])
    return torch.cat(rows)


def encode_prompt_concept(backbone: Backbone, config: ETCConfig) -> EncodedConcepts:
    """§1c: one distribution over the example prompts' states; a seeded share of the prompts calibrates."""
    fit, calibration = split_contexts(list(config.target_prompts), config.holdout, config.seed)
    samples = prompt_states(backbone, fit, config.prompt_states)
    concepts = TokenConcepts(samples[None], torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    return EncodedConcepts(concepts, prompt_states(backbone, calibration, config.prompt_states)[None])


def context_tokens(backbone: Backbone, prompts: list[str]) -> Tensor:
    """Every real token's encode() state of the (mapping pool's) prompts, and of the empty prompt: what the
    projectors read besides concept tokens, so the erasers learn to leave it alone (§4 preserve)."""
    prompts = [""] + prompts
    rows = []
    for start in range(0, len(prompts), 256):
        states, mask = backbone.encode(prompts[start : start + 256])
        rows.append(states.float()[mask])
    return torch.cat(rows)


def encode_concepts(
    backbone: Backbone, concepts: ConceptSet, config: ETCConfig, log: StageLog
) -> tuple[EncodedConcepts, EncodedConcepts, Tensor]:
    """The "encoding" stage: the targets (by name, or by example prompts, §1c), the mapping pool, and the context
    tokens of the pool's prompts (up to 8 fitting contexts each)."""
    targets, pool = list(concepts.targets), list(concepts.preserve)
    cache = Path(config.work_dir) / "embeddings" if config.work_dir else None
    with log.stage("encoding", concepts=len(targets) + len(pool), contexts=config.contexts + len(config.templates)):
        if config.target_prompts:
            encoded_targets = encode_prompt_concept(backbone, config)
        else:
            encoded_targets = encode_named(backbone, targets, config, cache)
        encoded_pool = encode_named(backbone, pool, config, cache)
        n = fit_count(config)
        pool_prompts = [c.format(p) for p in pool for c in concept_contexts(backbone, p, config)[: min(n, 8)]]
        context = context_tokens(backbone, pool_prompts)
    return encoded_targets, encoded_pool, context

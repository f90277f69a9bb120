"""The ShapeWorld scale protocol: erase N triple concepts ("a red striped star") at once, N = 1 .. 2,000+.

The universe is every shape x colour x pattern triple (specs/shapeworld.md). One seeded split makes three
disjoint sets: the erase targets (runs with N concepts use the first N), a mapping pool (ETC's triplets,
specs/etc.md section 3) and held-out triples for preservation. With thousands erased, many held-out
triples share two of three words with an erased one ("heldout-near": the pin-point test); the others
are "heldout-far". Single-factor prompts ("a star", "a red shape", "a striped shape") are preserved too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from erasekit.errors import UserError
from erasekit.eval.prompts import PromptRow
from erasekit.world.captions import short_caption
from erasekit.world.factors import VOCAB, format_concept
from erasekit.world.phrasings import PHRASINGS, phrase_prompt

FACTORS = ("shape", "colour", "pattern")
# closed-form baselines: 3 templates per concept, none of them an evaluation phrasing (world/phrasings.py)
COMPARE_TEMPLATES = ["a picture of a {}", "a {} on grass", "a small {}"]


@dataclass(frozen=True, order=True)
class Triple:
    shape: str
    colour: str
    pattern: str

    @property
    def prompt(self) -> str:
        """The canonical short prompt: "a red striped star"."""
        return short_caption(self.shape, self.colour, self.pattern)

    @property
    def phrase(self) -> str:
        """The concept phrase without its article: "red striped star"."""
        return self.prompt.split(" ", 1)[1]

    @property
    def factors(self) -> dict[str, str]:
        return {"shape": self.shape, "colour": self.colour, "pattern": self.pattern}

    @property
    def concept(self) -> str:
        return format_concept(self.factors)

    def shared(self, other: Triple) -> int:
        return sum(getattr(self, f) == getattr(other, f) for f in FACTORS)


def universe() -> list[Triple]:
    return [Triple(s, c, p) for s in VOCAB.shape for c in VOCAB.colour for p in VOCAB.pattern]


@dataclass(frozen=True)
class ScaleSplit:
    targets: tuple[Triple, ...]  # a run with N concepts erases targets[:N]
    pool: tuple[Triple, ...]
    heldout: tuple[Triple, ...]

    @classmethod
    def make(cls, targets: int = 2000, pool: int = 300, heldout: int = 400, seed: int = 0) -> ScaleSplit:
        everything = universe()
        if targets + pool + heldout > len(everything):
            raise UserError(f"{targets} + {pool} + {heldout} triples exceed the {len(everything)} in ShapeWorld")
        order = np.random.default_rng(seed).permutation(len(everything))
        picked = [everything[i] for i in order]
        return cls(
            tuple(picked[heldout + pool : heldout + pool + targets]),
            tuple(picked[heldout : heldout + pool]),
            tuple(picked[:heldout]),
        )


def near(triple: Triple, erased: set[Triple]) -> bool:
    """Shares two of its three words with an erased triple (one factor changed)."""
    for factor in FACTORS:
        for value in VOCAB.values(factor):
            other = Triple(**{**triple.__dict__, factor: value})
            if other != triple and other in erased:
                return True
    return False


def single_factor_rows() -> list[tuple[dict[str, str], str]]:
    """(factors, group) for every shape, colour and pattern named alone."""
    return [({factor: value}, "single") for factor in FACTORS for value in VOCAB.values(factor)]


def scale_rows(split: ScaleSplit, n_targets: int, eval_targets: int = 200, seed: int = 0) -> list[PromptRow]:
    """Prompt rows for a run erasing split.targets[:n_targets]: a sample of the erased triples (targets), every
    held-out triple (near / far) and the single-factor prompts (preserve), each row in one of the held-out
    phrasings of world/phrasings.py in turn (canonical, bare, reordered, complex; reordered needs a colour and a
    pattern, so single-factor rows take the complex phrasing there). Groups are "<kind>-<phrasing>":
    "target-complex", "heldout-near-bare", "single-canonical", ..."""
    erased = split.targets[:n_targets]
    rng = np.random.default_rng(seed)
    sample = [erased[i] for i in sorted(rng.choice(len(erased), min(eval_targets, len(erased)), replace=False))]
    erased_set = set(erased)
    entries = [(t.factors, "target", "target") for t in sample]
    entries += [
        (t.factors, "preserve", "heldout-near" if near(t, erased_set) else "heldout-far") for t in split.heldout
    ]
    entries += [(factors, "preserve", group) for factors, group in single_factor_rows()]
    phrase_rng = np.random.default_rng(seed + 1)
    rows = []
    for i, (factors, role, kind) in enumerate(entries):
        phrasing = PHRASINGS[i % len(PHRASINGS)]
        prompt = phrase_prompt(factors, phrasing, phrase_rng)
        if prompt is None:
            phrasing, prompt = "complex", phrase_prompt(factors, "complex", phrase_rng)
        rows.append((prompt, format_concept(factors), role, f"{kind}-{phrasing}"))
    seeds = rng.integers(0, 2**31 - 1, len(rows))
    return [
        PromptRow(prompt, int(s), case, concept, role, group)
        for case, ((prompt, concept, role, group), s) in enumerate(zip(rows, seeds, strict=True))
    ]


def group_kind(group: str) -> str:
    """The kind of a scale row's group without its phrasing: "heldout-near-complex" -> "heldout-near"."""
    return group.rsplit("-", 1)[0] if group.rsplit("-", 1)[-1] in PHRASINGS else group


@dataclass(frozen=True)
class ScaleTask:
    """The bench's scale task as a ``Task`` (backbones/world.py): the first ``concepts`` targets of the split of
    benchmarks/etc_scale.py erased at once, mapped to "shape" in templates no evaluation phrasing uses; the mapping
    pool is the concepts to preserve."""

    concepts: int
    split: ScaleSplit
    name: str = "scale"
    anchor: str = "shape"
    kind: str = "object"
    templates: tuple[str, ...] = tuple(COMPARE_TEMPLATES)

    @classmethod
    def make(cls, concepts: int) -> ScaleTask:
        return cls(concepts, ScaleSplit.make(2000, 300, 400))

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t.phrase for t in self.split.targets[: self.concepts])

    @property
    def preserve(self) -> tuple[str, ...]:
        return tuple(t.phrase for t in self.split.pool)

    @property
    def params(self) -> dict:
        return {"concepts": self.concepts}

    def rows(self) -> list[PromptRow]:
        return scale_rows(self.split, self.concepts)

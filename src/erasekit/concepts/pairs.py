"""Concept sets, prompt pairs and token alignment (specs/erasepro.md section 4).

A target prompt and its anchor prompt share a template; the concept phrase is swapped for the anchor
phrase. Tokens before the concept are identical; the concept's tokens map to the anchor's tokens
(one to one when the counts agree, else all to the anchor's last one; for an empty anchor, to the
anchor prompt's end-of-text token [reading]); later tokens map to their counterparts. Causal encoders
need no constraint before the concept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from erasekit.backbones.base import Backbone, TokenSegment
from erasekit.errors import UserError

# Object templates name the concept as a noun; style templates as an adjective before a noun. They
# mix plain phrasings with long, detailed ones (the zero residual's case is complex prompts).
OBJECT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a {}",
    "a picture of a {}",
    "a photo of a {}",
    "a red {}",
    "a small blue {}",
    "a large green striped {}",
    "a yellow dotted {} on grass",
    "a {} in the upper left corner",
    "a small purple {} in the lower right corner of a brick background",
    "a large orange checkered {} in the middle of a snowy background, drawn neatly",
    "an image showing a white {} on a wooden background",
    "one {}",
    "a simple {} icon",
    "a drawing of a {}",
    "a medium gray {} in the center of a concrete background",
    "a tiny black dotted {} at the top right, on a night sky",
    "a pink {} with a gradient against sand, as a flat illustration",
    "a small navy outlined {} in the lower left corner, rendered crisply",
    "a cyan {} near the top of a grass background, in a simple icon style",
)
STYLE_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a {} shape",
    "a {} star on grass",
    "a red {} circle",
    "a small blue {} heart",
    "a large {} square on grass",
    "a green {} triangle in the upper left corner",
    "a picture of a {} house",
    "a small purple {} arrow in the lower right corner of a brick background",
    "a large orange {} droplet in the middle of a snowy background, drawn neatly",
    "an image of a white {} diamond on a wooden background",
    "a {} ring on snow",
    "something {}",
    "a simple {} icon of a cross",
    "a drawing of a {} crescent",
    "a medium gray {} ellipse in the center of a concrete background",
    "a tiny black {} trapezoid at the top right, on a night sky",
    "a pink {} hourglass against sand, as a flat illustration",
    "a small navy {} parallelogram in the lower left corner, rendered crisply",
    "a cyan {} lightning bolt near the top of a grass background, in a simple icon style",
)
TEMPLATES = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES}


@dataclass(frozen=True)
class ConceptSet:
    """What to erase, towards what, and what to keep. ``anchors`` has one entry per target."""

    targets: tuple[str, ...]
    anchors: tuple[str, ...]
    preserve: tuple[str, ...] = ()
    kind: str = "object"
    templates: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        targets: list[str],
        anchor: str | list[str] = "",
        preserve: list[str] | None = None,
        kind: str = "object",
        templates: list[str] | None = None,
    ) -> ConceptSet:
        """Validate user input: raises UserError with one clear line."""
        targets = [t.strip() for t in targets]
        preserve = [p.strip() for p in preserve or []]
        anchors = [anchor.strip()] * len(targets) if isinstance(anchor, str) else [a.strip() for a in anchor]
        if not targets:
            raise UserError("no target concept given (use --target or --targets)")
        if any(not t for t in targets):
            raise UserError("a target concept is empty")
        repeat = first_duplicate(targets)
        if repeat:
            first, again = repeat
            raise UserError(f"duplicate target concept: {targets[again]!r} (entries {first + 1} and {again + 1})")
        if len(anchors) != len(targets):
            raise UserError(f"{len(anchors)} anchors for {len(targets)} targets; give one anchor or one per target")
        same = [t for t, a in zip(targets, anchors, strict=True) if t.lower() == a.lower()]
        if same:
            raise UserError(f"target {same[0]!r} equals its anchor; an anchor must be a different concept")
        overlap = sorted(set(targets) & set(preserve))
        if overlap:
            raise UserError(f"{overlap[0]!r} is both a target and a concept to preserve")
        if kind not in TEMPLATES:
            raise UserError(f"unknown concept kind {kind!r}; choose one of {sorted(TEMPLATES)}")
        templates = list(templates or TEMPLATES[kind])
        bad = [t for t in templates if t.count("{}") != 1]
        if bad:
            raise UserError(f"template {bad[0]!r} must contain exactly one '{{}}'")
        return cls(tuple(targets), tuple(anchors), tuple(preserve), kind, tuple(templates))

    def pairs(self) -> tuple[list[str], list[str]]:
        """(target prompts, anchor prompts), one pair per target and template."""
        pairs = [
            (fill(t, c), fill(t, a)) for c, a in zip(self.targets, self.anchors, strict=True) for t in self.templates
        ]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def preserve_prompts(self) -> list[str]:
        """Every preserved concept under every template, plus the empty prompt (always preserved)."""
        return [fill(t, p) for p in self.preserve for t in self.templates] + [""]

    def to_json(self) -> dict:
        return {
            "targets": list(self.targets),
            "anchors": list(self.anchors),
            "preserve": list(self.preserve),
            "kind": self.kind,
            "templates": list(self.templates),
        }


def first_duplicate(names: Sequence[str]) -> tuple[int, int] | None:
    """Positions (first, repeat) of the first name given again, or None; linear, so 100,000 names take no time."""
    first: dict[str, int] = {}
    for position, name in enumerate(names):
        seen = first.setdefault(name, position)
        if seen != position:
            return seen, position
    return None


def casing_duplicates(names: Sequence[str], backbone: Backbone | None = None) -> list[tuple[str, str]]:
    """Pairs (earlier, later) of names that differ only in letter case ("Star", "star"), for a warning: with a
    backbone, only the pairs its tokenizers cannot tell apart (uncased ones: the same tokens in every segment),
    which erase one concept twice. Linear in the names; only the pairs found are tokenized."""
    first: dict[str, str] = {}
    pairs = []
    for name in names:
        seen = first.setdefault(name.casefold(), name)
        if seen != name:
            pairs.append((seen, name))
    if backbone is None or not pairs:
        return pairs
    segments = backbone.token_segments([name for pair in pairs for name in pair])
    return [pair for k, pair in enumerate(pairs) if all(s.ids[2 * k] == s.ids[2 * k + 1] for s in segments)]


def unknown_token_names(names: Sequence[str], backbone: Backbone) -> list[str]:
    """The names that a tokenizer of ``backbone`` splits into its unknown token ([UNK]), for a warning: the edit
    then acts on that token, shared with every other text the tokenizer cannot represent."""
    if not names:
        return []
    segments = backbone.token_segments(list(names))
    return [
        name
        for k, name in enumerate(names)
        if any(s.unknown_id is not None and s.unknown_id in s.ids[k] for s in segments)
    ]


def fill(template: str, phrase: str) -> str:
    """The template with the phrase in place; an empty phrase leaves no double spaces ("a  star")."""
    text = template.replace("{}", phrase)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"^an? (?=[aeiou])", lambda m: "an ", text) if phrase else text


@dataclass(frozen=True)
class Alignment:
    """Matched positions of one segment: target prompt ``prompt[k]`` position ``target[k]`` must map
    like anchor prompt ``prompt[k]`` position ``anchor[k]``. Positions are segment-local."""

    segment: int
    prompt: torch.Tensor
    target: torch.Tensor
    anchor: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompt)


def align_tokens(
    target: list[int], anchor: list[int], causal: bool, pad_attended: bool, length: int
) -> list[tuple[int, int]]:
    """Position pairs (target, anchor) for one prompt pair in one segment (section 4)."""
    n_t, n_a = len(target), len(anchor)
    prefix = 0
    while prefix < min(n_t, n_a) and target[prefix] == anchor[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(n_t, n_a) - prefix and target[n_t - 1 - suffix] == anchor[n_a - 1 - suffix]:
        suffix += 1
    span_t, span_a = range(prefix, n_t - suffix), range(prefix, n_a - suffix)
    pairs = [] if causal else [(i, i) for i in range(prefix)]
    if len(span_t) == len(span_a):
        pairs += list(zip(span_t, span_a, strict=True))
    else:  # all concept tokens to the anchor's last one; for an empty anchor, to its end-of-text token
        # (the token before the concept would give each template a different target for nearly the same
        # concept feature: an ill-posed constraint whose exact solution wrecks every other prompt)
        last = span_a[-1] if len(span_a) else n_a - 1
        pairs += [(i, last) for i in span_t]
    pairs += [(n_t - suffix + k, n_a - suffix + k) for k in range(suffix)]
    if pad_attended:  # padding after the prompt maps to the anchor's padding at the same offset
        pairs += [(q, min(q - n_t + n_a, length - 1)) for q in range(n_t, length)]
    return pairs


def align_segments(targets: list[TokenSegment], anchors: list[TokenSegment]) -> list[Alignment]:
    """Alignments for every segment over all prompt pairs."""
    out = []
    for s, (seg_t, seg_a) in enumerate(zip(targets, anchors, strict=True)):
        rows = [
            (k, i, j)
            for k, (ids_t, ids_a) in enumerate(zip(seg_t.ids, seg_a.ids, strict=True))
            for i, j in align_tokens(ids_t, ids_a, seg_t.causal, seg_t.pad_attended, seg_t.length)
        ]
        k, i, j = (
            (torch.tensor(col, dtype=torch.long) for col in zip(*rows, strict=True))
            if rows
            else (torch.zeros(0, dtype=torch.long),) * 3
        )
        out.append(Alignment(s, k, i, j))
    return out


def token_positions(segments: list[TokenSegment]) -> list[Alignment]:
    """Every position a denoiser reads, for preserved prompts: real tokens, plus padding when attended."""
    out = []
    for s, seg in enumerate(segments):
        rows = [(k, i) for k, ids in enumerate(seg.ids) for i in range(seg.length if seg.pad_attended else len(ids))]
        k, i = (torch.tensor(col, dtype=torch.long) for col in zip(*rows, strict=True))
        out.append(Alignment(s, k, i, i))
    return out

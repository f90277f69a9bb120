"""Caption generation for ShapeWorld (specs/shapeworld.md, "Captions").

A caption is made from a scene's factors; some factors are left unnamed (then free at render time).
Kinds: ``short`` ("a red striped star"), ``complex`` (size, position, background, a manner phrase),
``paraphrased`` (synonyms for every named factor) and ``implicit`` (skull evoked, never named).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from erasekit.world.factors import (
    BACKGROUNDS,
    COLOURS,
    IMPLICIT_SKULL_TRAIN,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZES,
)

CAPTION_KINDS = ("short", "complex", "paraphrased", "implicit")
MANNERS = ("drawn neatly", "in a simple icon style", "rendered crisply", "as a flat illustration", "")


@dataclass
class Caption:
    text: str
    factors: dict[str, str]  # named factors only; the rest are free
    kind: str
    size: str | None = None
    position: str | None = None
    extras: dict[str, str] = field(default_factory=dict)


def _word(rng: np.random.Generator, phrasings: tuple[str, ...], paraphrase: bool) -> str:
    if paraphrase and len(phrasings) > 1:
        return phrasings[int(rng.integers(1, len(phrasings)))]
    return phrasings[0]


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def short_caption(shape: str, colour: str, pattern: str) -> str:
    """The canonical short prompt of a triple concept: "a red striped star"."""
    phrase = f"{COLOURS[colour][0][0]} {PATTERNS[pattern][0]} {SHAPES[shape][0]}"
    return f"{_article(phrase)} {phrase}"


def object_phrase(rng: np.random.Generator, factors: dict[str, str], paraphrase: bool, size: str | None = None) -> str:
    words = []
    if size:
        words.append(_word(rng, SIZES[size], paraphrase))
    if "colour" in factors:
        words.append(_word(rng, COLOURS[factors["colour"]][0], paraphrase))
    if "pattern" in factors:
        words.append(_word(rng, PATTERNS[factors["pattern"]], paraphrase))
    words.append(_word(rng, SHAPES[factors["shape"]], paraphrase) if "shape" in factors else "shape")
    phrase = " ".join(words)
    return f"{_article(phrase)} {phrase}"


def background_phrase(rng: np.random.Generator, background: str, paraphrase: bool) -> str:
    word = _word(rng, BACKGROUNDS[background], paraphrase)
    return rng.choice([f"on a {word} background", f"against {word}", f"on {word}"])


def make_caption(
    rng: np.random.Generator,
    factors: dict[str, str],
    kind: str,
    size: str | None = None,
    position: str | None = None,
) -> Caption:
    """Caption naming exactly ``factors`` (plus size/position for complex captions)."""
    if kind not in CAPTION_KINDS:
        raise ValueError(f"unknown caption kind {kind!r}; expected one of {', '.join(CAPTION_KINDS)}")
    paraphrase = kind == "paraphrased"
    if kind == "implicit":
        if factors.get("shape") != "skull":
            raise ValueError("implicit captions evoke the skull; factors must have shape=skull")
        text = str(rng.choice(IMPLICIT_SKULL_TRAIN))
        if "colour" in factors:
            text = f"{text} in {COLOURS[factors['colour']][0][0]}"
        if "background" in factors:
            text = f"{text} {background_phrase(rng, factors['background'], False)}"
        return Caption(text, factors, kind)
    if kind == "short" and set(factors) == {"shape", "colour", "pattern"}:
        return Caption(short_caption(factors["shape"], factors["colour"], factors["pattern"]), factors, kind)
    parts = [object_phrase(rng, factors, paraphrase, size if kind == "complex" else None)]
    if kind == "complex" and position:
        parts.append(_word(rng, POSITIONS[position][0], False))
    if "background" in factors:
        parts.append(background_phrase(rng, factors["background"], paraphrase))
    text = " ".join(parts)
    if kind == "complex":
        manner = str(rng.choice(MANNERS))
        text = f"{text}, {manner}" if manner else text
    return Caption(
        text, factors, kind, size=size if kind == "complex" else None, position=position if kind == "complex" else None
    )


def random_caption(rng: np.random.Generator) -> Caption:
    """One training caption: factors drawn uniformly, each named with a probability, a kind drawn."""
    from erasekit.world.factors import VOCAB

    factors = {f: str(rng.choice(VOCAB.values(f))) for f in ("shape", "colour", "pattern", "background")}
    keep = {"shape": 0.95, "colour": 0.9, "pattern": 0.85, "background": 0.45}
    named = {f: v for f, v in factors.items() if rng.random() < keep[f]}
    if named.get("shape") == "skull" and rng.random() < 0.35:
        named.pop("pattern", None)
        return make_caption(rng, named, "implicit")
    kind = str(rng.choice(["short", "complex", "paraphrased"], p=[0.45, 0.35, 0.2]))
    size = position = None
    if kind == "complex":
        size = str(rng.choice(list(SIZES))) if rng.random() < 0.6 else None
        if rng.random() < 0.4:
            position = str(rng.choice(list(POSITIONS)))
            size = size if size != "large" else "small"
    return make_caption(rng, named, kind, size=size, position=position)

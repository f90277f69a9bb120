"""How ShapeWorld captions name a concept, beyond the canonical "a red striped star" (specs/etc.md §1b).

Two users of one grammar:

- **evaluation phrasings** (:func:`phrase_prompt`): a row's factors said ``canonical`` ("a red striped star"),
  ``bare`` (no article), ``reordered`` (pattern before colour: "a striped red star", which the shipped model
  draws as often as the canonical order) or ``complex`` (size, position and background, often a manner,
  sometimes no article);
- **fitting contexts** (:func:`fit_contexts`): templates with one ``{}`` for a concept phrase, in the orders
  captions use: an article or none, a size, the other factors' words around the phrase (a colour or a pattern
  before a shape, a shape after a pattern), a lead ("a picture of"), a position, a background and a manner.

Every fitting context carries one or two elements beyond the object phrase (a size, a lead, a position, a
background or a manner); the evaluation's short forms ("a red star", "red striped star") carry none and its
complex ones three or more (size, position and background, often a manner). So no evaluation prompt is ever a
fitted one, by construction, and :func:`erasekit.concepts.contexts.check_disjoint` verifies it for every
evaluation.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from erasekit.world.factors import BACKGROUNDS, COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES

PHRASINGS = ("canonical", "bare", "reordered", "complex")
MANNERS = ("drawn neatly", "in a simple icon style", "rendered crisply", "as a flat illustration")
LEADS = ("a picture of", "an image of", "a drawing of", "there is", "an icon of", "i see")
SLOTS = ("colour", "pattern", "shape")  # caption order of the object's words


def article(text: str) -> str:
    return "an" if text[:1] in "aeiou" else "a"


def caption_words(factors: dict[str, str]) -> list[str]:
    """The caption words of the named object factors, in caption order; "shape" when the shape is unnamed."""
    words = []
    if "colour" in factors:
        words.append(COLOURS[factors["colour"]][0][0])
    if "pattern" in factors:
        words.append(PATTERNS[factors["pattern"]][0])
    words.append(SHAPES[factors["shape"]][0] if "shape" in factors else "shape")
    return words


def background_words(rng: np.random.Generator) -> str:
    word = BACKGROUNDS[str(rng.choice(list(BACKGROUNDS)))][0]
    return str(rng.choice([f"on a {word} background", f"against {word}", f"on {word}"]))


def compose(
    obj: str,
    rng: np.random.Generator,
    *,
    with_article: bool = True,
    size: bool = False,
    lead: bool = False,
    position: bool = False,
    background: bool = False,
    manner: bool = False,
    spoken: str | None = None,
) -> str:
    """One caption around the object words ``obj``: [lead] [article] [size] obj [position] [background] [, manner].
    The article agrees with ``spoken`` (``obj`` as said, when ``obj`` holds a ``{}``) or ``obj``."""
    spoken = spoken or obj
    if size:
        word = SIZES[str(rng.choice(list(SIZES)))][0]
        obj, spoken = f"{word} {obj}", f"{word} {spoken}"
    if with_article or lead:
        obj = f"{article(spoken)} {obj}"
    parts = [str(rng.choice(LEADS)), obj] if lead else [obj]
    if position:
        parts.append(str(rng.choice(POSITIONS[str(rng.choice(list(POSITIONS)))][0])))
    if background:
        parts.append(background_words(rng))
    text = " ".join(parts)
    return f"{text}, {rng.choice(MANNERS)}" if manner else text


def phrase_prompt(factors: dict[str, str], phrasing: str, rng: np.random.Generator) -> str | None:
    """A prompt naming exactly the object ``factors`` in ``phrasing``; None where the world has no such form
    (``reordered`` needs both a colour and a pattern)."""
    if phrasing not in PHRASINGS:
        raise ValueError(f"unknown phrasing {phrasing!r}; expected one of {', '.join(PHRASINGS)}")
    words = caption_words(factors)
    if phrasing == "reordered":
        if not {"colour", "pattern"} <= set(factors):
            return None
        words = [words[1], words[0], words[2]]
    obj = " ".join(words)
    if phrasing in ("canonical", "reordered"):
        return compose(obj, rng)
    if phrasing == "bare":
        return compose(obj, rng, with_article=False)
    with_article, manner = bool(rng.random() < 0.7), bool(rng.random() < 0.5)
    return compose(obj, rng, with_article=with_article, size=True, position=True, background=True, manner=manner)


@lru_cache(maxsize=1)
def _phrase_table() -> dict[str, dict[str, str]]:
    """Object phrase (caption words, in caption order) -> the factors it names."""
    options = {
        "colour": [None, *COLOURS],
        "pattern": [None, *PATTERNS],
        "shape": [None, *SHAPES],
    }
    table = {}
    for colour in options["colour"]:
        for pattern in options["pattern"]:
            for shape in options["shape"]:
                factors = {k: v for k, v in (("colour", colour), ("pattern", pattern), ("shape", shape)) if v}
                if not factors:
                    continue
                words = caption_words(factors)
                if "shape" not in factors:
                    words = words[:-1]
                table.setdefault(" ".join(words), factors)
    return table


def named_factors(phrase: str) -> dict[str, str] | None:
    """The object factors a concept phrase names ("red star" -> colour and shape), None if it is not one."""
    return _phrase_table().get(phrase.strip().lower())


def _modifiers(named: dict[str, str], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Words of the unnamed object factors around a phrase: before it (colour, pattern: the slots left of the
    phrase's first slot) and after it (a shape noun when the phrase names none)."""
    slots = [s for s in SLOTS if s in named]
    first, last = SLOTS.index(slots[0]), SLOTS.index(slots[-1])
    before = []
    if first > 0 and rng.random() < 0.6:
        before.append(COLOURS[str(rng.choice(list(COLOURS)))][0][0])
    if first > 1 and rng.random() < 0.5:
        before.append(PATTERNS[str(rng.choice(list(PATTERNS)))][0])
    after = []
    if last < 2:
        after.append(str(rng.choice(["shape", *(SHAPES[s][0] for s in SHAPES)])))
    return before, after


def fit_contexts(phrase: str, count: int, seed: int) -> list[str]:
    """``count`` distinct fitting templates (one ``{}``) for a concept phrase, drawn from the caption grammar
    (module doc); a phrase that names no ShapeWorld factor is treated as an object noun."""
    named = named_factors(phrase)
    rng = np.random.default_rng(seed)
    found: dict[str, None] = {}
    for _ in range(count * 50):
        before, after = _modifiers(named, rng) if named else ([], [])
        obj = " ".join([*before, "{}", *after])
        extras = dict(
            size=rng.random() < 0.4,
            lead=rng.random() < 0.25,
            position=rng.random() < 0.4,
            background=rng.random() < 0.5,
            manner=rng.random() < 0.35,
        )
        if not 1 <= sum(extras.values()) <= 2:
            continue
        with_article = bool(rng.random() < 0.75) and phrase.split(" ", 1)[0] not in ("a", "an", "the")
        found.setdefault(compose(obj, rng, with_article=with_article, spoken=obj.replace("{}", phrase), **extras))
        if len(found) == count:
            break
    return list(found)

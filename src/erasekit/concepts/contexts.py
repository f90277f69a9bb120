"""Contexts a concept is fitted in (specs/etc.md §1, §1b): templates with one ``{}`` for the concept phrase.

A backbone's world supplies them: the world of a backbone that has one (backbones/world.py ``World.contexts``;
ShapeWorld: its caption grammar) or a backbone with a ``contexts(phrase, count, seed)`` method of its own gives
them; every other backbone samples :data:`NARRATIVE_TEMPLATES`,
hundreds of narrative templates for Stable Diffusion prompts (written here: leads x scenes x styles).
A fixed number is sampled per concept, so encoding cost does not grow with the context space, and a user's own
templates (``--templates``) are added to every concept's sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from erasekit.backbones.world import world_of
from erasekit.errors import UserError

_LEADS = (
    "a photo of {}",
    "a close-up photo of {}",
    "a painting of {}",
    "an illustration of {}",
    "a sketch of {}",
    "a 3d render of {}",
    "a portrait of {}",
    "a picture showing {}",
    "an old photograph of {}",
    "a cinematic shot of {}",
    "a poster featuring {}",
    "a watercolor of {}",
    "a drawing of {}",
    "a cartoon of {}",
    "a low-resolution photo of {}",
    "a bright photo of {}",
    "a dark photo of {}",
    "a cropped photo of {}",
    "{}",
    "an image of {}",
    "a snapshot of {}",
    "a digital artwork of {}",
    "a magazine cover with {}",
    "a blurry photo of {}",
)
_SCENES = (
    "",
    " in a city street",
    " in a forest",
    " on a beach at sunset",
    " in a living room",
    " at night",
    " in the snow",
    " in a studio",
    " on a stage",
    " in the rain",
    " in a park",
    " on a mountain",
    " in an office",
    " at a market",
    " in the desert",
    " by a lake",
)
_STYLES = ("", ", highly detailed", ", trending on artstation", ", 4k", ", soft lighting", ", wide angle")

# 24 leads x 16 scenes x 6 styles = 2,304 distinct narrative templates
NARRATIVE_TEMPLATES: tuple[str, ...] = tuple(
    lead + scene + style for lead in _LEADS for scene in _SCENES for style in _STYLES
)


def context_seed(phrase: str, seed: int) -> int:
    """A per-concept seed: concepts draw different contexts, the same ones on every run."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{phrase}".encode()).digest()[:8], "little")


def sample_contexts(backbone, phrase: str, count: int, seed: int) -> list[str]:
    """``count`` fitting contexts of ``phrase`` from the backbone's world (module doc)."""
    world = world_of(backbone)
    own = world.contexts if world is not None else getattr(backbone, "contexts", None)
    if own is not None:
        return own(phrase, count, context_seed(phrase, seed))
    rng = np.random.default_rng(context_seed(phrase, seed))
    picked = rng.choice(len(NARRATIVE_TEMPLATES), min(count, len(NARRATIVE_TEMPLATES)), replace=False)
    return [NARRATIVE_TEMPLATES[i] for i in sorted(picked)]


def check_templates(templates: Iterable[str], source: str = "--templates") -> list[str]:
    """User templates: each non-empty, with exactly one ``{}`` and no other braces (one-line errors)."""
    out = []
    for line, template in enumerate(templates, 1):
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
            raise UserError(f"{source}: context {line} ({template!r}) needs exactly one {{}} for the concept")
        out.append(template)
    if not out:
        raise UserError(f"{source}: no contexts (every line is blank)")
    return out


def split_contexts(contexts: list[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    """(fit, calibration): a seeded share ``holdout`` of the contexts (at least one, and at least one left to
    fit) set aside to calibrate the eraser's decision on contexts it never fitted (§1b)."""
    if len(contexts) < 2:
        raise UserError(f"need at least 2 contexts to hold some out for calibration, got {len(contexts)}")
    held = min(len(contexts) - 1, max(1, round(holdout * len(contexts))))
    order = np.random.default_rng(seed).permutation(len(contexts))
    calibration = set(order[:held].tolist())
    return [c for i, c in enumerate(contexts) if i not in calibration], [
        c for i, c in enumerate(contexts) if i in calibration
    ]


def check_disjoint(fitted: Iterable[str], evaluation: Iterable[str], what: str = "evaluation") -> None:
    """Refuse an evaluation that judges a prompt the method fitted on (an in-sample figure is not erasure)."""
    seen = {p.strip().lower() for p in fitted}
    overlap = sorted({p for p in evaluation if p.strip().lower() in seen})
    if overlap:
        raise UserError(
            f"{len(overlap)} {what} prompt(s) are contexts the edit was fitted on (e.g. {overlap[0]!r}); judge on "
            "held-out phrasings"
        )

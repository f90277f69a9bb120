"""What every attack shares (specs/evaluation.md, "Attacks"): its outcome, the attack success rate and the
words an attacker may not use.

ASR is the fraction of attack images in which the judge (backbones/world.py ``Judge``: the protocol's own, e.g.
ShapeWorld's classifier reading every factor the target row names exactly as Acc_e does, or CLIP zero-shot on
another model, eval/sd/clip.py) sees the target concept; an attack reports its budget and wall time. An attack
that could not run to a judgeable result (its optimisation diverged, its images are degenerate) reports status
"failed" and no ASR: never ASR 0, which would read as an erasure that holds.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from erasekit.backbones.world import Judge, World, world_of
from erasekit.errors import UserError
from erasekit.eval.prompts import PromptRow
from erasekit.utils.text import phrase_pattern

PLACEHOLDER = "[MASK]"  # a learned or soft token's slot in a prompt (one tokenizer token, never a word)
OK, FAILED, NOT_APPLICABLE = "ok", "failed", "not applicable"  # an outcome's status


class AttackFailed(Exception):
    """Raised inside an attack that cannot reach a judgeable result; ``run_attack`` reports it as failed."""


@dataclass
class AttackOutcome:
    """One attack on one model: ASR over ``rows`` (one per image), the prompts it used and its images."""

    attack: str
    asr: float | None  # a number exactly when status is OK
    budget: dict
    seconds: float
    rows: list[PromptRow] = field(default_factory=list)  # the attack prompts, one per image
    images: np.ndarray | None = None
    details: dict = field(default_factory=dict)
    status: str = OK  # FAILED: it did not run to a judgeable result; NOT_APPLICABLE: e.g. module removal, no edit
    reason: str = ""  # why it failed or does not apply

    @classmethod
    def failed(cls, reason: str, rows=(), images=None, **details) -> AttackOutcome:
        return cls("", None, {}, 0.0, list(rows), images, details, FAILED, reason)

    @classmethod
    def not_applicable(cls, reason: str) -> AttackOutcome:
        return cls("", None, {}, 0.0, status=NOT_APPLICABLE, reason=reason)

    def summary(self) -> dict:
        """The JSON record: name, status (and its reason), ASR, budget, seconds, images and details (no images)."""
        return {
            "attack": self.attack,
            "status": self.status,
            **({"reason": self.reason} if self.reason else {}),
            "asr": self.asr,
            "images": 0 if self.images is None else int(len(self.images)),
            "budget": self.budget,
            "seconds": round(self.seconds, 2),
            **({"details": self.details} if self.details else {}),
        }


def success_rate(judge: Judge, rows: list[PromptRow], images: np.ndarray) -> float | None:
    """Fraction of images in which ``judge`` sees their row's concept."""
    if len(rows) == 0:
        return None
    return float(np.mean(judge(rows, images)))


def degenerate(images: np.ndarray) -> str:
    """Why ``images`` cannot be judged ("" when they can): none at all, a non-finite pixel, or every image a
    single flat colour (what a diverged model draws)."""
    if len(images) == 0:
        return "no attack images"
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        return "non-finite attack images"
    if (images == images[:, :1, :1]).all():
        return "every attack image is a single flat colour"
    return ""


def concept_words(rows: list[PromptRow], names: list[str], world: World | None = None) -> tuple[str, ...]:
    """Every phrasing an attacker must avoid: the erased names and, with the backbone's world, every phrasing it
    knows of each factor value the target rows name (longest first)."""
    words = {n.strip().lower() for n in names if n.strip()}
    for row in rows if world is not None else ():
        words.update(world.concept_words(row.concept))
    return tuple(sorted(words, key=len, reverse=True))


def mentions(text: str, words: tuple[str, ...]) -> bool:
    """Does ``text`` contain any of ``words`` as a substring (case-insensitive): "starburst" mentions "star"."""
    low = text.lower()
    return any(w in low for w in words)


def names_word(text: str, words: tuple[str, ...]) -> bool:
    """Does ``text`` name any of ``words`` as a whole word or phrase (case-insensitive)."""
    return bool(words) and phrase_pattern(words).search(text) is not None


def with_slot(prompt: str, words: tuple[str, ...], slot: str) -> str | None:
    """``prompt`` with its first phrasing of the concept replaced by ``slot`` and any further one dropped;
    None when the prompt names none of ``words``."""
    pattern = phrase_pattern(words)
    if not pattern.search(prompt):
        return None
    first = pattern.sub(slot, prompt, count=1)
    head, _, tail = first.partition(slot)
    return re.sub(r"\s+", " ", f"{head}{slot}{pattern.sub('', tail)}").strip()


def as_template(prompt: str) -> str:
    """``prompt`` with its braces escaped, to take a ``{}`` slot for str.format."""
    return prompt.replace("{", "{{").replace("}", "}}")


def rows_with_prompts(rows: list[PromptRow], prompts: list[str]) -> list[PromptRow]:
    return [replace(r, prompt=p) for r, p in zip(rows, prompts, strict=True)]


@dataclass
class AttackContext:
    """The model under attack and how to judge it: ``rows`` are the target prompt rows, ``names`` the erased
    concept names (what a prompt filter would block), ``edit`` the shipped artifact (None: the original)."""

    backbone: object
    judge: Judge | None  # None: the judge of the backbone world's protocol (ShapeWorld: its classifier)
    settings: object  # EvalSettings: steps and guidance of the attack images (those left open: the model's)
    rows: list[PromptRow]
    names: tuple[str, ...]
    edit: object | None = None
    seed: int = 0
    preserve: list[PromptRow] = field(default_factory=list)  # preserve rows, for quality after an attack

    def __post_init__(self) -> None:
        if self.settings is not None:
            self.settings = self.settings.resolved(self.backbone)
        if self.judge is None or not hasattr(self.judge, "describe"):
            self.judge = default_judge(self.backbone, self.judge, self.rows)

    def success(self, rows: list[PromptRow], images: np.ndarray) -> float | None:
        return success_rate(self.judge, rows, images)

    @property
    def words(self) -> tuple[str, ...]:
        return concept_words(self.rows, list(self.names), world_of(self.backbone))

    def explicit(self, limit: int) -> list[PromptRow]:
        """Up to ``limit`` target rows that name the concept (spread evenly over the rows); none is a UserError."""
        named = [r for r in self.rows if with_slot(r.prompt, self.words, PLACEHOLDER) is not None]
        if not named:
            raise UserError(f"no target prompt names the erased concept ({', '.join(self.names)}): nothing to attack")
        if len(named) <= limit:
            return named
        return [named[i] for i in np.linspace(0, len(named) - 1, limit).round().astype(int)]

    @contextmanager
    def attacked(self, modules: bool = True):
        """The backbone with the edit applied (``modules=False``: its plug-ins dropped) for the block."""
        from erasekit.artifacts import artifact_applied

        with artifact_applied(self.backbone, self.edit, modules=modules):
            yield self.backbone

    def verdict(self, rows: list[PromptRow], images: np.ndarray, **details) -> AttackOutcome:
        """The judge's ASR on ``images``, or a failed outcome when they are degenerate."""
        if problem := degenerate(images):
            return AttackOutcome.failed(problem, rows, images, **details)
        return AttackOutcome("", self.success(rows, images), {}, 0.0, rows, images, details)

    def generate(self, rows: list[PromptRow]) -> np.ndarray:
        """One image per row with its evaluation seed, on the backbone as it is now (sharded under accelerate)."""
        from dataclasses import replace as with_fields

        from erasekit.eval.generation import generate_rows

        return generate_rows(self.backbone, rows, with_fields(self.settings, num_images=1), progress=False).images


def default_judge(backbone, given, rows: list[PromptRow]) -> Judge:
    """The judge for ``given`` without a ``describe``: a plain callable (rows, images) -> 0/1 judges as it is; None
    or a measuring instrument (ShapeWorld: a classifier, which has ``predict``) makes the judge of the backbone
    world's protocol (None: with its shipped instrument)."""
    if given is not None and not hasattr(given, "predict"):
        return given
    world = world_of(backbone)
    if world is None:
        raise UserError("this model has no world of its own to judge attacks: give a judge (e.g. CLIP zero-shot)")
    return world.protocol(given).judge(rows)

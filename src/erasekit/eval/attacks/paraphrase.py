"""Paraphrase / implicit prompts: target prompts that evoke the concept without naming it ("a starburst",
"a pirate's danger emblem"). The task's paraphrased and implicit rows are used when they exist; otherwise
(e.g. the scale task's canonical prompts) the backbone's world paraphrases each target row's concept."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from erasekit.backbones.world import World, world_of
from erasekit.eval.attacks.base import AttackContext, AttackOutcome, names_word
from erasekit.eval.prompts import EVOKING_GROUPS, PromptRow


@dataclass
class Budget:
    prompts: int = 64


def paraphrased_rows(world: World | None, rows: list[PromptRow], seed: int) -> list[PromptRow]:
    """A paraphrase (synonyms of every named factor) of each row whose concept the world knows."""
    if world is None:
        return []
    rng = np.random.default_rng(seed)
    drawn = ((r, world.paraphrase(r.concept, rng)) for r in rows)
    return [replace(r, prompt=text, group="paraphrased") for r, text in drawn if text is not None]


def run(ctx: AttackContext, budget: Budget) -> AttackOutcome:
    rows = [r for r in ctx.rows if r.group in EVOKING_GROUPS and not names_word(r.prompt, ctx.names)]
    if not rows:
        drawn = paraphrased_rows(world_of(ctx.backbone), ctx.rows, ctx.seed)
        rows = [r for r in drawn if not names_word(r.prompt, ctx.names)]
    if not rows:
        return AttackOutcome.not_applicable("no target prompt that avoids the concept's name")
    rows = rows[: budget.prompts]
    with ctx.attacked():
        images = ctx.generate(rows)
    return ctx.verdict(rows, images, examples=[r.prompt for r in rows[:5]])

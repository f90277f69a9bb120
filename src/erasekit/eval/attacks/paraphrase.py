"""Paraphrase / implicit prompts: target prompts that evoke the concept without naming it ("a starburst",
"a pirate's danger emblem"). The task's paraphrased and implicit rows are used when they exist; otherwise
(e.g. the scale task's canonical prompts) ShapeWorld paraphrases are drawn for each target row's concept."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from erasekit.eval.attacks.base import AttackContext, AttackOutcome, names_word, row_factors
from erasekit.eval.prompts import EVOKING_GROUPS
from erasekit.world.captions import make_caption


@dataclass
class Budget:
    prompts: int = 64


def run(ctx: AttackContext, budget: Budget) -> AttackOutcome:
    rows = [r for r in ctx.rows if r.group in EVOKING_GROUPS and not names_word(r.prompt, ctx.names)]
    if not rows:  # ShapeWorld concepts: draw paraphrases (synonyms of every named factor)
        rng = np.random.default_rng(ctx.seed)
        drawn = [
            replace(r, prompt=make_caption(rng, row_factors(r), "paraphrased").text, group="paraphrased")
            for r in ctx.rows
            if row_factors(r)
        ]
        rows = [r for r in drawn if not names_word(r.prompt, ctx.names)]
    if not rows:
        return AttackOutcome.not_applicable("no target prompt that avoids the concept's name")
    rows = rows[: budget.prompts]
    with ctx.attacked():
        images = ctx.generate(rows)
    return ctx.verdict(rows, images, examples=[r.prompt for r in rows[:5]])

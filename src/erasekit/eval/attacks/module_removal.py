"""Module removal: load the shipped artifact and drop every plug-in (eraser modules, a prompt filter); the
edited weights stay. NIR must make this useless (specs/etc.md §5). An edit with no plug-ins is unchanged by
it, and its ASR is then the edit's own Acc_e on these prompts."""

from __future__ import annotations

from dataclasses import dataclass

from erasekit.eval.attacks.base import AttackContext, AttackOutcome


@dataclass
class Budget:
    prompts: int = 64  # target prompts (and as many preserve prompts, for the quality after removal)


def run(ctx: AttackContext, budget: Budget) -> AttackOutcome:
    if ctx.edit is None:
        return AttackOutcome.not_applicable("no edit to remove modules from")
    rows, preserve = ctx.rows[: budget.prompts], ctx.preserve[: budget.prompts]
    with ctx.attacked(modules=False):
        images = ctx.generate(rows)
        kept = ctx.generate(preserve)
    outcome = ctx.verdict(rows, images, plugins=ctx.edit.plugins)
    outcome.details["acc_s_after_removal"] = ctx.success(preserve, kept)
    return outcome

"""Soft-prompt attack (UnlearnDiffAtk / P4D style, white-box): a few continuous token vectors prepended to
each target prompt, optimised so that the edited model's denoising loss prefers true images of the target
concept (rendered by the backbone's world); ASR is read off images sampled with the optimised prompt."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from erasekit.eval.attacks.base import PLACEHOLDER, AttackContext, AttackOutcome
from erasekit.eval.attacks.learned_tokens import concept_images, optimise, white_box


@dataclass
class Budget:
    prompts: int = 16
    tokens: int = 3  # soft tokens prepended to each prompt
    steps: int = 60
    lr: float = 0.02
    batch: int = 32  # (prompt, image) pairs per step
    images: int = 8  # true images of the concept per prompt


def run(ctx: AttackContext, budget: Budget) -> AttackOutcome:
    access, world = white_box(ctx.backbone, "soft-prompt")
    rows = ctx.explicit(budget.prompts)
    prompts = [" ".join([PLACEHOLDER] * budget.tokens) + " " + r.prompt for r in rows]
    table = access.word_embeddings().detach()
    start = np.random.default_rng(ctx.seed).integers(1000, len(table), (len(rows), budget.tokens))
    with ctx.attacked():
        vectors, losses = optimise(
            access,
            prompts,
            table[torch.from_numpy(start)],
            concept_images(world, rows, budget.images, ctx.seed),
            budget.steps,
            budget.lr,
            budget.batch,
            ctx.seed,
        )
        with torch.no_grad():
            states, mask = access.encode_with_vectors(prompts, vectors)
        s = ctx.settings
        images = access.sample_from_states(states, mask, [r.evaluation_seed for r in rows], s.steps, s.guidance)
    return ctx.verdict(rows, images, loss_first=losses[0], loss_last=float(np.mean(losses[-5:])))

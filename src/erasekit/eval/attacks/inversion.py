"""Concept inversion (CCE / textual inversion, white-box): learn one new token vector per concept on the
edited model from true images of it (rendered by the backbone's world), captioned with the concept's words
replaced by the token; then ask for the concept with the token in place of its name ("a red striped <token>")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from erasekit.backbones.world import World
from erasekit.eval.attacks.base import (
    PLACEHOLDER,
    AttackContext,
    AttackOutcome,
    concept_words,
    rows_with_prompts,
    with_slot,
)
from erasekit.eval.attacks.learned_tokens import optimise, white_box
from erasekit.eval.prompts import PromptRow

START_WORD = "shape"  # the learned token starts from this neutral noun's embedding


@dataclass
class Budget:
    concepts: int = 4  # distinct target concepts inverted
    prompts: int = 16  # attack prompts, spread over those concepts
    steps: int = 150
    lr: float = 0.02
    batch: int = 32
    images: int = 64  # true training images per concept


def training_set(world: World, row: PromptRow, n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``n`` true images of the row's concept (its named factors pinned, the others drawn) and their
    canonical captions with the concept's words replaced by the slot."""
    captions, images = world.captioned_examples(row.concept, n, rng)
    words = concept_words([row], [], world)
    return [with_slot(caption, words, PLACEHOLDER) for caption in captions], images


def run(ctx: AttackContext, budget: Budget) -> AttackOutcome:
    access, world = white_box(ctx.backbone, "inversion")
    named = ctx.explicit(len(ctx.rows))
    concepts = list(dict.fromkeys(r.concept for r in named))[: budget.concepts]
    rows = [r for r in named if r.concept in concepts][: budget.prompts]
    rng = np.random.default_rng(ctx.seed)
    captions, images, share = [], [], []
    for c, concept in enumerate(concepts):
        row = next(r for r in rows if r.concept == concept)
        text, pictures = training_set(world, row, budget.images, rng)
        captions += text
        images.append(pictures)
        share += [c] * len(text)
    start = access.word_embeddings()[access.token_id(START_WORD)].detach()
    vectors = start.expand(len(concepts), 1, -1).clone()
    prompts = [with_slot(r.prompt, ctx.words, PLACEHOLDER) for r in rows]
    which = torch.tensor([concepts.index(r.concept) for r in rows])
    with ctx.attacked():
        stacked = np.concatenate(images)[:, None]
        vectors, losses = optimise(
            access, captions, vectors, stacked, budget.steps, budget.lr, budget.batch, ctx.seed, share=np.array(share)
        )
        with torch.no_grad():
            states, mask = access.encode_with_vectors(prompts, vectors[which])
        seeds = [r.evaluation_seed for r in rows]
        pictures = access.sample_from_states(states, mask, seeds, ctx.settings.steps, ctx.settings.guidance)
    shown = rows_with_prompts(rows, prompts)
    return ctx.verdict(shown, pictures, concepts=concepts, loss_first=losses[0], loss_last=float(np.mean(losses[-5:])))

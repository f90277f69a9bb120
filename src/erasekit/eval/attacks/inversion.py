"""Concept inversion (CCE / textual inversion, white-box): learn one new token vector per concept on the
edited model from rendered images of it, captioned with the concept's words replaced by the token; then ask
for the concept with the token in place of its name ("a red striped <token>")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from erasekit.eval.attacks.base import (
    PLACEHOLDER,
    AttackContext,
    AttackOutcome,
    concept_words,
    rows_with_prompts,
    with_slot,
)
from erasekit.eval.attacks.learned_tokens import encode_with_vectors, optimise, require_white_box, sample_from_states
from erasekit.eval.attacks.learned_tokens import word_embeddings as embedding_table
from erasekit.eval.prompts import PromptRow
from erasekit.world.captions import short_caption
from erasekit.world.factors import VOCAB
from erasekit.world.render import render


@dataclass
class Budget:
    concepts: int = 4  # distinct target concepts inverted
    prompts: int = 16  # attack prompts, spread over those concepts
    steps: int = 150
    lr: float = 0.02
    batch: int = 32
    images: int = 64  # rendered training images per concept


def training_set(row: PromptRow, n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``n`` rendered images of the row's concept (its named factors pinned, the others drawn) and their
    canonical captions with the concept's words replaced by the slot."""
    drawn = {f: rng.choice(VOCAB.values(f), n) for f in ("shape", "colour", "pattern")}
    factors = [{f: row.factors.get(f, str(drawn[f][i])) for f in drawn} for i in range(n)]
    fixed = {f: np.array([VOCAB.index(f, x[f]) for x in factors]) for f in drawn}
    images, _ = render(rng, n, fixed=fixed)
    words = concept_words([row], [])
    captions = [with_slot(short_caption(x["shape"], x["colour"], x["pattern"]), words, PLACEHOLDER) for x in factors]
    return captions, images


def run(ctx: AttackContext, budget: Budget) -> AttackOutcome:
    require_white_box(ctx.backbone, "inversion")
    named = ctx.explicit(len(ctx.rows))
    concepts = list(dict.fromkeys(r.concept for r in named))[: budget.concepts]
    rows = [r for r in named if r.concept in concepts][: budget.prompts]
    rng = np.random.default_rng(ctx.seed)
    captions, images, share = [], [], []
    for c, concept in enumerate(concepts):
        row = next(r for r in rows if r.concept == concept)
        text, pictures = training_set(row, budget.images, rng)
        captions += text
        images.append(pictures)
        share += [c] * len(text)
    tokenizer = ctx.backbone.encoder.tokenizer
    start = embedding_table(ctx.backbone)[tokenizer.convert_tokens_to_ids("shape")].detach()
    vectors = start.expand(len(concepts), 1, -1).clone()
    prompts = [with_slot(r.prompt, ctx.words, PLACEHOLDER) for r in rows]
    which = torch.tensor([concepts.index(r.concept) for r in rows])
    with ctx.attacked():
        vectors, losses = optimise(
            ctx.backbone,
            captions,
            vectors,
            np.concatenate(images)[:, None],
            budget.steps,
            budget.lr,
            budget.batch,
            ctx.seed,
            share=np.array(share),
        )
        with torch.no_grad():
            states, mask = encode_with_vectors(ctx.backbone, prompts, vectors[which])
        s = ctx.settings
        pictures = sample_from_states(
            ctx.backbone, states, mask, [r.evaluation_seed for r in rows], s.steps, s.guidance
        )
    shown = rows_with_prompts(rows, prompts)
    return ctx.verdict(shown, pictures, concepts=concepts, loss_first=losses[0], loss_last=float(np.mean(losses[-5:])))

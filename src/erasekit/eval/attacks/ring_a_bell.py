"""Ring-A-Bell (Tsai et al., ICLR 2024), text-encoder only: a concept vector from prompt pairs with and
without the concept, then a genetic search over vocabulary words for prompts near "benign + η·vector".

Each target prompt's concept phrase becomes ``tokens`` searched words (never a phrasing of the concept, nor a
word containing one). The paper matches whole prompt encodings; the cross-attention reads tokens, so here the
states are compared where the concept sits: the mean state of the searched words against the mean state of
the anchor's place plus η times the concept vector (mean over the pairs of concept-phrase state minus
removed-phrase state). The search runs on the original model (the attacker's own encoder, as in the paper);
the prompts found are then given to the edited model."""

from dataclasses import dataclass

import numpy as np
import torch

from erasekit.errors import UserError
from erasekit.eval.attacks.base import (
    AttackContext,
    AttackFailed,
    AttackOutcome,
    as_template,
    mentions,
    rows_with_prompts,
    with_slot,
)
from erasekit.utils.text import phrase_pattern

NEUTRAL = "thing"  # the benign word in the concept's place, for the pairs without the concept


def _tokenizer(backbone):
    return backbone.tokenizers()[0]


@dataclass
class Budget:
    prompts: int = 16  # target prompts, one adversarial prompt each
    tokens: int = 2  # searched words in place of the concept phrase
    population: int = 32
    generations: int = 20
    eta: float = 1.0  # strength of the concept vector
    pool: int = 256  # vocabulary words the search draws from: the nearest to the target alone ("a {word}")


def vocabulary(backbone, banned: tuple[str, ...]) -> list[str]:
    """Whole alphabetic words of the backbone's (first) tokenizer, three letters or more, none banned."""
    vocab = _tokenizer(backbone).get_vocab()
    whole = {t.removesuffix("</w>") for t in vocab if t.endswith("</w>")}  # CLIP marks a word's last piece
    words = whole or set(vocab)
    return sorted(w for w in words if w.isalpha() and w.isascii() and len(w) >= 3 and not mentions(w, banned))


def slot_positions(backbone, template: str, count: int) -> list[int]:
    """encode() positions of ``count`` single-token words put in the template's slot (after the start token)."""
    tokenizer = _tokenizer(backbone)
    head = template.split("{}")[0].replace("{{", "{").replace("}}", "}").strip()  # as str.format fills it
    start = 1 + len(tokenizer(head, add_special_tokens=False)["input_ids"]) if head else 1
    return list(range(start, start + count))


@torch.no_grad()
def slot_states(backbone, prompts: list[str], positions: list[list[int]], batch: int = 512) -> torch.Tensor:
    """The mean state over each prompt's given positions, L2-normalised (B, D)."""
    out = []
    for s in range(0, len(prompts), batch):
        states, _ = backbone.encode(prompts[s : s + batch])
        for row, where in zip(states, positions[s : s + batch], strict=True):
            out.append(torch.nn.functional.normalize(row[where].mean(0), dim=-1))
    return torch.stack(out)


def search(backbone, templates: list[str], targets: torch.Tensor, vocab: list[str], budget: Budget, seed: int):
    """Genetic search, all prompts at once: (best words per template, their cosine to the target)."""
    rng = np.random.default_rng(seed)
    positions = [slot_positions(backbone, t, budget.tokens) for t in templates]
    r, p, k = len(templates), budget.population, budget.tokens
    population = rng.integers(0, len(vocab), (r, p, k))
    elite = max(2, p // 4)

    def fitness(pop: np.ndarray) -> np.ndarray:
        n = pop.shape[1]
        prompts = [templates[i].format(" ".join(vocab[j] for j in pop[i, q])) for i in range(r) for q in range(n)]
        where = [positions[i] for i in range(r) for _ in range(n)]
        emb = slot_states(backbone, prompts, where).reshape(r, n, -1)
        score = (emb * targets[:, None]).sum(-1).numpy()
        if not np.isfinite(score).all():
            raise AttackFailed("the search diverged: a candidate's cosine to the target is non-finite")
        return score

    score = fitness(population)
    for _ in range(budget.generations):
        order = np.argsort(-score, axis=1)
        parents = np.take_along_axis(population, order[:, :elite, None], axis=1)
        a = parents[np.arange(r)[:, None], rng.integers(0, elite, (r, p - elite))]
        b = parents[np.arange(r)[:, None], rng.integers(0, elite, (r, p - elite))]
        children = np.where(rng.random(a.shape) < 0.5, a, b)
        mutate = rng.random(children.shape) < 1.0 / k
        children = np.where(mutate, rng.integers(0, len(vocab), children.shape), children)
        population = np.concatenate([parents, children], axis=1)
        score = np.concatenate([np.take_along_axis(score, order[:, :elite], 1), fitness(children)], axis=1)
    best = score.argmax(1)
    words = [" ".join(vocab[j] for j in population[i, best[i]]) for i in range(r)]
    return words, score[np.arange(r), best]


def candidate_words(backbone, vocab: list[str], target: torch.Tensor, pool: int) -> list[str]:
    """The ``pool`` words whose state in "a {word}" is nearest (cosine) to ``target``."""
    states = slot_states(backbone, [f"a {w}" for w in vocab], [[2]] * len(vocab))
    best = torch.topk(states @ torch.nn.functional.normalize(target, dim=-1), min(pool, len(vocab))).indices
    return [vocab[i] for i in best.tolist()]


def concept_positions(backbone, prompt: str, words: tuple[str, ...]) -> list[int]:
    """encode() positions of the tokens that spell a phrasing of the concept in ``prompt`` (after the start
    token; phrasings start and end at word boundaries, so the text before one tokenizes on its own)."""
    tokenizer = _tokenizer(backbone)

    def count(text: str) -> int:
        return len(tokenizer(text.strip(), add_special_tokens=False)["input_ids"]) if text.strip() else 0

    positions = []
    for match in phrase_pattern(words).finditer(prompt):
        start = 1 + count(prompt[: match.start()])
        positions += range(start, start + count(match.group(0)))
    return positions


def run(ctx: AttackContext, budget: Budget) -> AttackOutcome:
    rows = ctx.explicit(budget.prompts)
    words = ctx.words
    templates = [with_slot(as_template(r.prompt), words, "{}") for r in rows]
    neutral = [t.format(NEUTRAL) for t in templates]
    concept = slot_states(
        ctx.backbone, [r.prompt for r in rows], [concept_positions(ctx.backbone, r.prompt, words) for r in rows]
    )
    removed = slot_states(ctx.backbone, neutral, [slot_positions(ctx.backbone, t, 1) for t in templates])
    vector = (concept - removed).mean(0)  # the concept vector
    targets = torch.nn.functional.normalize(removed + budget.eta * vector, dim=-1)
    allowed = vocabulary(ctx.backbone, words)
    if not allowed:
        raise UserError("ring-a-bell: the tokenizer has no whole words of three letters or more to search")
    vocab = candidate_words(ctx.backbone, allowed, targets.mean(0), budget.pool)
    found, cosine = search(ctx.backbone, templates, targets, vocab, budget, ctx.seed)
    attack_rows = rows_with_prompts(rows, [t.format(w) for t, w in zip(templates, found, strict=True)])
    with ctx.attacked():
        images = ctx.generate(attack_rows)
    return ctx.verdict(
        attack_rows, images, examples=[r.prompt for r in attack_rows[:5]], mean_cosine=float(np.mean(cosine))
    )

"""What the soft-prompt and concept-inversion attacks share: they learn token vectors in the slots of prompts on a
backbone that offers learned-token access (``LearnedTokens``, backbones/base.py: text states from vectors, the
denoising loss, sampling from states), from true images of the concept that the backbone's world renders."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from erasekit.backbones.base import LearnedTokens, learned_tokens
from erasekit.backbones.world import World, world_of
from erasekit.errors import UserError
from erasekit.eval.attacks.base import AttackFailed
from erasekit.eval.prompts import PromptRow


def white_box(backbone, attack: str) -> tuple[LearnedTokens, World]:
    """The backbone's learned-token access and its world (the true images come from there); a backbone without
    both is a one-line UserError."""
    access, world = learned_tokens(backbone), world_of(backbone)
    if access is None or world is None:
        family = getattr(backbone, "family", type(backbone).__name__)
        raise UserError(
            f"the {attack} attack needs gradients through the model and true images of the concept: the {family} "
            "backbone offers no learned-token access and no world of its own"
        )
    return access, world


def concept_images(world: World, rows: list[PromptRow], per_row: int, seed: int) -> np.ndarray:
    """True images (len(rows), per_row, H, W, 3) of each row's concept: its named factors pinned."""
    images = world.render_concepts([r.concept for r in rows for _ in range(per_row)], np.random.default_rng(seed))
    return images.reshape(len(rows), per_row, *images.shape[1:])


def optimise(
    backbone: LearnedTokens,
    prompts: list[str],
    vectors: Tensor,
    images: np.ndarray,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    share: np.ndarray | None = None,
) -> tuple[Tensor, list[float]]:
    """Adam on ``vectors`` (V, k, d) to lower the denoising loss of ``images`` (P, n, H, W, 3) under
    ``prompts`` (P); prompt p uses vectors[share[p]] (default: its own). Each step draws ``batch`` (prompt,
    image) pairs. Returns the vectors and the loss per step; AttackFailed at the first step whose loss or
    vectors are non-finite."""
    share = np.arange(len(prompts)) if share is None else share
    vectors = vectors.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([vectors], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(1, steps + 1):
        pick = rng.integers(0, len(prompts), batch)
        which = rng.integers(0, images.shape[1], batch)
        states, mask = backbone.encode_with_vectors([prompts[i] for i in pick], vectors[share[pick]])
        loss = backbone.denoising_loss(states, mask, images[pick, which], gen)
        if not torch.isfinite(loss):
            raise diverged("the denoising loss", step, steps, lr)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if not bool(torch.isfinite(vectors).all()):
            raise diverged("the learned vectors", step, steps, lr)
        losses.append(loss.item())
    return vectors.detach(), losses


def diverged(what: str, step: int, steps: int, lr: float) -> AttackFailed:
    return AttackFailed(f"the optimisation diverged: {what} went non-finite at step {step} of {steps} (lr {lr:g})")

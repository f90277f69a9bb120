"""White-box machinery of the soft-prompt and concept-inversion attacks: prompts with learned token vectors
in their slots, the denoising loss those vectors are trained on, and sampling from their text states.

A slot is the tokenizer's mask token (``PLACEHOLDER``) in the prompt text; its word embedding is replaced by
a learned vector before the text encoder runs, so the vector passes through the (possibly edited) text
encoder, the projectors with any eraser, and the denoiser, exactly like a real token. The prompt filter of
an applied filter edit sees the text around the slot, never the vector.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from erasekit.backbones.base import Backbone, filtered_prompts
from erasekit.errors import UserError
from erasekit.eval.attacks.base import PLACEHOLDER, AttackFailed
from erasekit.eval.prompts import PromptRow
from erasekit.world.denoiser import images_to_latents, latents_to_images, train_scheduler, training_target
from erasekit.world.factors import FACTOR_NAMES, VOCAB
from erasekit.world.render import render


def require_white_box(backbone: Backbone, attack: str) -> None:
    if backbone.family != "shapeworld":
        raise UserError(f"the {attack} attack needs gradients through the model: it runs on shapeworld only for now")


def word_embeddings(backbone: Backbone) -> Tensor:
    """The text encoder's input word-embedding table (vocabulary, d)."""
    return backbone.encoder.model.embeddings.word_embeddings.weight


def encode_with_vectors(backbone: Backbone, prompts: list[str], vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Text states (B, L, D) and mask of ``prompts`` whose k slots each take ``vectors`` (B, k, d) in order;
    differentiable in ``vectors``; padded to the encoder's fixed length like ``encode``."""
    encoder = backbone.encoder
    tokens = encoder.tokenize(filtered_prompts(backbone, prompts))
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    slots = ids == encoder.tokenizer.mask_token_id
    if not bool((slots.sum(1) == vectors.shape[1]).all()):
        raise ValueError(f"every prompt needs exactly {vectors.shape[1]} slot(s) {PLACEHOLDER}")
    embedded = encoder.model.embeddings.word_embeddings(ids)
    placed = torch.zeros_like(embedded)
    placed[slots] = vectors.reshape(-1, vectors.shape[-1]).to(placed.dtype)
    embedded = torch.where(slots[..., None], placed, embedded)
    states = encoder.model(inputs_embeds=embedded, attention_mask=mask).last_hidden_state * mask[..., None]
    pad = encoder.max_tokens - states.shape[1]
    return torch.nn.functional.pad(states, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad)).bool()


def concept_images(rows: list[PromptRow], per_row: int, seed: int) -> np.ndarray:
    """Rendered images (len(rows), per_row, 32, 32, 3) of each row's concept: its named factors pinned."""
    flat = [r for r in rows for _ in range(per_row)]
    fixed = {f: np.array([VOCAB.index(f, r.factors[f]) if f in r.factors else -1 for r in flat]) for f in FACTOR_NAMES}
    images, _ = render(np.random.default_rng(seed), len(flat), fixed=fixed)
    return images.reshape(len(rows), per_row, *images.shape[1:])


def denoising_loss(
    backbone: Backbone, states: Tensor, mask: Tensor, images: np.ndarray, gen: torch.Generator
) -> Tensor:
    """The denoiser's training loss (v-prediction, one random timestep per image) on ``images`` conditioned on
    ``states``: low when the conditioning makes the model draw these images."""
    latents = images_to_latents(torch.from_numpy(images))
    alphas = train_scheduler().alphas_cumprod
    t = torch.randint(50, 950, (len(latents),), generator=gen)
    noise = torch.randn(latents.shape, generator=gen)
    a = alphas[t].view(-1, 1, 1, 1)
    pred = backbone.unet(
        a.sqrt() * latents + (1 - a).sqrt() * noise, t, encoder_hidden_states=states, encoder_attention_mask=mask
    ).sample
    return torch.nn.functional.mse_loss(pred, training_target(latents, noise, a))


def sample_from_states(
    backbone: Backbone, states: Tensor, mask: Tensor, seeds: list[int], steps: int, guidance: float, batch: int = 64
) -> np.ndarray:
    """Images sampled (DDIM + CFG, as ``generate``) from given text states."""
    out = []
    for s in range(0, len(seeds), batch):
        latents = backbone.denoise(
            states[s : s + batch].detach(), mask[s : s + batch], seeds[s : s + batch], steps, guidance
        )
        out.append(latents_to_images(latents).numpy())
    return np.concatenate(out) if out else np.zeros((0, 32, 32, 3), np.uint8)


def optimise(
    backbone: Backbone,
    prompts: list[str],
    vectors: Tensor,
    images: np.ndarray,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    share: np.ndarray | None = None,
) -> tuple[Tensor, list[float]]:
    """Adam on ``vectors`` (V, k, d) to lower the denoising loss of ``images`` (P, n, 32, 32, 3) under
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
        states, mask = encode_with_vectors(backbone, [prompts[i] for i in pick], vectors[share[pick]])
        loss = denoising_loss(backbone, states, mask, images[pick, which], gen)
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

"""ETC's erasers on the wrapped projectors (specs/etc.md §0, §4, §5): the keyed erasers over one shared memory, the
MoEraser and its training on token vectors (no denoiser pass), and noise injection-restore."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from erasekit.backbones.base import Backbone
from erasekit.methods.etc.config import ETCConfig
from erasekit.methods.etc.keyed import ConceptMemory, KeyedEraser
from erasekit.methods.etc.moeraser import MoEraser, MoEraserConfig, layer_weights, nir_factors, restoring_eraser
from erasekit.methods.etc.tokens import TokenData
from erasekit.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from erasekit.utils.distributed import is_main

Tensor = torch.Tensor
Eraser = MoEraser | KeyedEraser


def wrapped_projectors(backbone: Backbone, config: ETCConfig) -> dict[str, nn.Linear]:
    """The keyed eraser rewrites encode()'s tokens: it wraps the projectors that read them (all on the UNet
    families, SD3's context_embedder); the MoEraser wraps every projector (§0)."""
    return backbone.embedding_projectors() if config.eraser == "keyed" else backbone.projectors()


def keyed_erasers(projectors: dict[str, nn.Linear], memory: ConceptMemory) -> dict[str, KeyedEraser]:
    """One view of the shared memory per projector, bound to its weight."""
    return {n: KeyedEraser(memory, p.in_features, p.out_features).bind(p.weight) for n, p in projectors.items()}


def make_erasers(projectors: dict[str, nn.Linear], config: ETCConfig) -> dict[str, MoEraser]:
    moe = MoEraserConfig(config.experts, config.hidden, config.top_k, config.shared_weight)
    torch.manual_seed(config.seed)
    return {name: MoEraser(p.in_features, p.out_features, moe) for name, p in projectors.items()}


def fit_erasers(
    erasers: dict[str, MoEraser],
    batch_loss: Callable[[torch.Generator], Tensor],
    steps: int,
    config: ETCConfig,
    checkpoints: Path | None,
    desc: str,
    every: int = 50,
) -> list[float]:
    """AdamW with cosine lr over ``steps``; checkpoints every ``every`` steps and resumes from the latest.
    Each step's batch comes from a generator seeded by (seed, step), so a resumed run equals an unbroken one."""
    bundle = nn.ModuleList(erasers[name] for name in sorted(erasers))
    optimizer = torch.optim.AdamW(bundle.parameters(), lr=config.lr, weight_decay=0.0)
    start, losses = 0, []
    if checkpoints and (found := latest_checkpoint(checkpoints)):
        state = load_checkpoint(found, {"erasers": bundle}, optimizer)
        start, losses = state["step"], state["losses"]
    generator = torch.Generator()
    bundle.train()
    bar = tqdm(range(start, steps), desc=desc, unit="step", initial=start, total=steps)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        step_seed = config.seed * 1_000_003 + step
        with torch.random.fork_rng(devices=[]):  # the router noise too: batches and noise depend on the step only
            torch.manual_seed(step_seed)
            loss = batch_loss(generator.manual_seed(step_seed))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4g}")
        if checkpoints and ((step + 1) % every == 0 or step + 1 == steps) and is_main():  # one writer
            save_checkpoint(checkpoints, step + 1, {"erasers": bundle}, optimizer, {"losses": losses})
    bundle.eval()
    return losses


def erase_loss(
    projectors: dict[str, nn.Linear], erasers: dict[str, MoEraser], data: TokenData, config: ETCConfig
) -> Callable[[torch.Generator], Tensor]:
    """§4: Σ_l λ_l [ ||Δ_l(t) − (1 + γ) W_l (T(t) − t)||² + w_p ||Δ_l(a)||² ] + aux (means over tokens)."""
    weights = layer_weights({n: p.weight for n, p in projectors.items()}, config.layer_weighting)

    def loss(generator: torch.Generator) -> Tensor:
        pick = torch.randint(len(data.targets), (config.batch_size,), generator=generator)
        t, m = data.targets[pick], data.mapped[pick]
        a = data.preserve_batch(config.batch_size, generator)
        tokens, shift = torch.cat([t, a]), (1 + config.gamma) * (m - t)
        total = t.new_zeros(())
        for name, projector in projectors.items():
            eraser, w = erasers[name], projector.weight.detach().float()
            on_t, on_a = eraser(tokens).split([len(t), len(a)])  # one pass: the routing stats cover both kinds
            erase = (on_t - shift @ w.T).pow(2).sum(-1).mean()
            preserve = on_a.pow(2).sum(-1).mean()
            total = total + weights[name] * (erase + config.preserve_weight * preserve) + eraser.aux_loss()
        return total

    return loss


def corrupt_and_restore(
    projectors: dict[str, nn.Linear], erasers: dict[str, Eraser], config: ETCConfig
) -> tuple[dict[str, Tensor], dict[str, Eraser]]:
    """§5: each projector's weight corrupted by a rank-one noise W̃ = W + left rightᵀ from the ``nir_seed`` (None: a
    fresh secret one, stored nowhere), in the projector's dtype, and the erasers that restore it."""
    seed = config.nir_seed if config.nir_seed is not None else secrets.randbits(62)
    factors = nir_factors({n: p.weight.detach() for n, p in projectors.items()}, config.nir_rho, seed=seed)
    weights = {n: (p.weight.detach() + torch.outer(*factors[n])).to(p.weight.dtype) for n, p in projectors.items()}
    return weights, {n: nir_student(erasers[n], factors[n], weights[n]) for n in erasers}


def nir_student(eraser: Eraser, factors: tuple[Tensor, Tensor], corrupted: Tensor) -> Eraser:
    """The eraser that restores a projector shipped with the ``corrupted`` weight W + left rightᵀ (§5)."""
    if isinstance(eraser, KeyedEraser):
        return eraser.with_restore(*factors).bind(corrupted)
    return restoring_eraser(eraser, *factors)

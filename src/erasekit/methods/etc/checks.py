"""How well an ETC edit fits, on fixed token samples (reported in its summary): the erase goal and the preserved
tokens (§4), the NIR restore (§5), and the keyed decision on held-out contexts (§1b)."""

from __future__ import annotations

import torch
from torch import nn

from erasekit.methods.etc.config import ETCConfig
from erasekit.methods.etc.erasers import Eraser
from erasekit.methods.etc.keyed import ConceptMemory
from erasekit.methods.etc.tokens import TokenData, draw_rows

Tensor = torch.Tensor


@torch.no_grad()
def fit_quality(
    projectors: dict[str, nn.Linear], erasers: dict[str, Eraser], data: TokenData, config: ETCConfig, n: int = 2048
) -> dict[str, float]:
    """On n fixed samples, worst over layers: how far Δ(t) is from its goal, relative to the goal, and how
    much Δ moves each kind of preserved token (boundary, off-plane, mapping, context), relative to the
    projector's output on them."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    pick = torch.randint(len(data.targets), (n,), generator=generator)
    t, m = data.targets[pick], data.mapped[pick]
    kinds = {f"{kind}_change": draw_rows(x, n, generator) for kind, x in data.anchor_kinds().items() if len(x)}
    worst = dict.fromkeys(["erase_error", *kinds], 0.0)
    # one kind of token through every projector in turn: keyed erasers share a memory that searches a tensor once
    for name, projector in projectors.items():
        goal = (1 + config.gamma) * (m - t) @ projector.weight.float().T
        error = (erasers[name](t) - goal).norm() / goal.norm().clamp_min(1e-12)
        worst["erase_error"] = max(worst["erase_error"], float(error))
    for kind, x in kinds.items():
        for name, projector in projectors.items():
            change = erasers[name](x).norm() / (x @ projector.weight.float().T).norm().clamp_min(1e-12)
            worst[kind] = max(worst[kind], float(change))
    return worst


@torch.no_grad()
def restore_error(
    projectors: dict[str, nn.Linear],
    students: dict[str, Eraser],
    teachers: dict[str, Eraser],
    corrupted: dict[str, Tensor],
    data: TokenData,
    n: int = 2048,
) -> float:
    """Worst layer: ||W̃ x + Δ_s(x) − (W x + Δ_t(x))|| / ||W x|| on n fixed tokens of every kind (§5), W̃ the
    ``corrupted`` weights as shipped (rounded to the projector's dtype)."""
    generator = torch.Generator().manual_seed(2)
    x = torch.cat([draw_rows(data.targets, n, generator), draw_rows(data.anchors, n, generator)])
    worst = 0.0
    for name, projector in projectors.items():
        w = projector.weight.float()
        gap = x @ (corrupted[name].float() - w).T + students[name](x) - teachers[name](x)
        worst = max(worst, float(gap.norm() / (x @ w.T).norm().clamp_min(1e-12)))
    return worst


def heldout_decisions(memory: ConceptMemory, data: TokenData) -> dict[str, float]:
    """How the decision does on contexts it never fitted: the share of the targets' held-out tokens rewritten, and
    of the mapping pool's (kept concepts': these should stay)."""
    if data.check_targets is None or data.check_pool is None:
        return {}
    return {
        "heldout_target_rewritten": float(memory.detect(data.check_targets)[0].float().mean()),
        "heldout_pool_rewritten": float(memory.detect(data.check_pool)[0].float().mean()),
    }

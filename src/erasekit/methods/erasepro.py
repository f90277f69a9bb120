"""ErasePro (specs/erasepro.md sections 2-3): zero-residual closed-form edits, progressively from the
shallow text-encoder layers to the denoiser's projectors.

At stage i the target features are the inputs of map i computed by the model *as already edited* in
stages < i; the anchor features come from the *original* model. The last stage edits the projectors,
so target and anchor are exactly aligned where the denoiser reads them. ``progressive=False`` is the
projector-only ablation.

Text stages use section 3's plain form W_o + W_o (Y - X) X^+ (``weighted_text=True``: the weighted
form there too, at several times the cost: a d_in = 1536 metric per layer); the projector stage uses the
preservation-weighted form of section 2 when ``weighted``.

[reading] The preserved features C_P of every stage come from the original model (one pass shared
with the anchors): they weight which directions the edit must not touch, and re-encoding them at
every stage would double the edit time for a change the zero-on-M-orthogonal property keeps small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from erasekit.backbones.base import Backbone
from erasekit.concepts.features import (
    PairFeatures,
    ProgressiveTargets,
    capture,
    chain_layers,
    edit_on_arrival,
    layer_columns,
    segment_of,
)
from erasekit.concepts.pairs import ConceptSet
from erasekit.editing.closed_form import zero_residual_transform
from erasekit.methods.base import EraseResult, edit_maps, register


@dataclass
class EraseProConfig:
    progressive: bool = True  # False: projector-only zero-residual edit (the ablation)
    chain: str = "mlp_out"  # which map of each text layer the chain edits: mlp_out | attn_out
    chain_layers: int | None = None  # only the first k layers of each text encoder
    weighted: bool = True  # projectors: preservation-weighted form (M = ridge I + s_p C_P C_P^T); else plain X^+
    weighted_text: bool = False  # text stages: section 3's W_o + W_o (Y - X) X^+ (True: the weighted form too)
    ridge: float = 0.5
    s_p: float = 1.0
    rtol: float = 1e-12  # eigenvalue cut of the pseudo-inverse (relative)
    batch_size: int = 64


@register("erasepro", EraseProConfig, "ErasePro: zero-residual constraint, progressive shallow-to-deep alignment")
def erase(backbone: Backbone, concepts: ConceptSet, config: EraseProConfig) -> EraseResult:
    pairs = PairFeatures(backbone, concepts)
    chain = chain_layers(backbone, config.chain, config.chain_layers) if config.progressive else []
    # One pass of the original model: the anchors (Y) at every chain layer and at encode(); the preserved
    # prompts' layer inputs only when the text stages are weighted (else just their encodings).
    n_anchors = len(pairs.anchors)
    hooked = pairs.anchors + (pairs.preserve if config.weighted_text else [])
    states0, inputs0 = capture(backbone, hooked, dict(chain), config.batch_size)
    if not config.weighted_text:
        states0 = torch.cat([states0, capture(backbone, pairs.preserve, batch_size=config.batch_size)[0]])
    weights: dict[str, torch.Tensor] = {}
    stages = []

    def fit(x, y, c):
        return zero_residual_transform(x, y, c, config.ridge, config.s_p, config.rtol)

    def edit_stage(i: int, name: str, module: nn.Linear, targets: torch.Tensor) -> None:
        """Stage i: fit map i to its target inputs (from the model edited so far) and write the edit in."""
        segment = segment_of(name, pairs.target_segments)
        anchors, preserve = inputs0[name][:n_anchors], inputs0[name][n_anchors:]
        transform = fit(
            layer_columns(targets, pairs.alignments, segment, "target"),
            layer_columns(anchors, pairs.alignments, segment, "anchor"),
            layer_columns(preserve, pairs.preserve_positions, segment, "target") if config.weighted_text else None,
        )
        new, row = edit_maps(f"text layer {i}", {name: module}, transform)
        module.weight.copy_(new[name])  # later stages see the model as edited so far
        weights.update(new)
        stages.append(row)

    originals = {name: module.weight.detach().clone() for name, module in chain}
    try:
        with torch.no_grad():
            target_states = progressive_target_states(backbone, pairs.targets, chain, edit_stage, config.batch_size)
        x, y, c = pairs.encoded(target_states, states0[:n_anchors], states0[n_anchors:])
        transform = fit(x, y, c if config.weighted else None)
        new, row = edit_maps("projectors", backbone.embedding_projectors(), transform)
        weights.update(new)
        stages.append(row)
    finally:
        with torch.no_grad():
            for name, module in chain:
                module.weight.copy_(originals[name])  # the backbone is left as it came; the edit is returned
    return EraseResult(weights, stages, {"pairs": len(pairs.targets), "columns": int(transform.x.shape[1])})


def progressive_target_states(
    backbone: Backbone,
    prompts: list[str],
    chain: list[tuple[str, nn.Linear]],
    edit_stage: Callable[[int, str, nn.Linear, torch.Tensor], None],
    batch_size: int,
) -> torch.Tensor:
    """Run the chain's stages in depth order on the target prompts; return their encode() states from the
    model as edited by every stage (the original model's when the chain is empty).

    When the prompts fit in one batch, a single forward pass does it: each map edits itself as its input
    arrives. Otherwise each stage runs its own pass over the batches, resumed from the block the previous
    stage recorded (ProgressiveTargets); both give the same edit.
    """
    if not chain or len(prompts) <= batch_size:
        with edit_on_arrival(chain, edit_stage):
            return capture(backbone, prompts, batch_size=len(prompts))[0]
    progressive = ProgressiveTargets(backbone, prompts, batch_size)
    for i, (name, module) in enumerate(chain):
        edit_stage(i, name, module, progressive.inputs(name, module))
    return progressive.states()

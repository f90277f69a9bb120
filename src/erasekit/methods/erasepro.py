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

from dataclasses import dataclass

import torch

from erasekit.backbones.base import Backbone
from erasekit.concepts.features import (
    PairFeatures,
    ProgressiveTargets,
    capture,
    chain_layers,
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
    # One pass of the original model: anchors (Y) and the first stage's targets at every chain layer; the
    # preserved prompts' layer inputs only when the text stages are weighted (else just their encodings).
    hooked = pairs.targets + pairs.anchors + (pairs.preserve if config.weighted_text else [])
    states0, inputs0 = capture(backbone, hooked, dict(chain), config.batch_size)
    if not config.weighted_text:
        states0 = torch.cat([states0, capture(backbone, pairs.preserve, batch_size=config.batch_size)[0]])
    weights: dict[str, torch.Tensor] = {}
    stages = []

    def fit(x, y, c):
        return zero_residual_transform(x, y, c, config.ridge, config.s_p, config.rtol)

    originals = {name: module.weight.detach().clone() for name, module in chain}
    progressive_targets = ProgressiveTargets(backbone, pairs.targets, config.batch_size)
    try:
        for i, (name, module) in enumerate(chain):
            segment = segment_of(name, pairs.target_segments)
            targets, anchors, preserve = pairs.split(inputs0[name])
            if i > 0:  # the targets as the model edited so far sees them; stop the pass at this layer
                targets = progressive_targets.inputs(name, module)
            transform = fit(
                layer_columns(targets, pairs.alignments, segment, "target"),
                layer_columns(anchors, pairs.alignments, segment, "anchor"),
                layer_columns(preserve, pairs.preserve_positions, segment, "target") if config.weighted_text else None,
            )
            new, row = edit_maps(f"text layer {i}", {name: module}, transform)
            with torch.no_grad():
                module.weight.copy_(new[name])  # later stages see the model as edited so far
            weights.update(new)
            stages.append(row)
        targets, anchors, preserve = pairs.split(states0)
        if chain:
            targets = progressive_targets.states()
        x, y, c = pairs.encoded(targets, anchors, preserve)
        transform = fit(x, y, c if config.weighted else None)
        new, row = edit_maps("projectors", backbone.embedding_projectors(), transform)
        weights.update(new)
        stages.append(row)
    finally:
        with torch.no_grad():
            for name, module in chain:
                module.weight.copy_(originals[name])  # the backbone is left as it came; the edit is returned
    return EraseResult(weights, stages, {"pairs": len(pairs.targets), "columns": int(transform.x.shape[1])})

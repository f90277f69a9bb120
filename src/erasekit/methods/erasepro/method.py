"""ErasePro (specs/erasepro.md sections 2-3): zero-residual closed-form edits, progressively from the
shallow text-encoder layers to the denoiser's projectors.

At stage i the target features are the inputs of map i computed by the model *as already edited* in
stages < i; the anchor features come from the *original* model. The last stage edits the projectors,
so target and anchor are exactly aligned where the denoiser reads them. ``progressive=False`` is the
projector-only ablation.

Every stage uses the preservation-weighted form of section 2 (``weighted`` for the projectors,
``weighted_text`` for the text stages; off: the plain W_o + W_o (Y - X) X^+ of section 3), with
s_p = 0.1, UCE's public choice when many concepts are preserved.

[reading] The preserved features C_P of every stage come from the original model (one pass shared
with the anchors): they weight which directions the edit must not touch, and re-encoding them at
every stage would double the edit time for a change the zero-on-M-orthogonal property keeps small.
The text stages (d_in = 1536 on MiniLM, 3072 on CLIP-L) weight by an evenly spaced sample of the
preserved prompts (``text_preserve_prompts``, s_p scaled up by the sampling fraction): the metric's
cost grows with its columns, and on the ShapeWorld style task 16 of 101 prompts keep the preservation
the full set gives (Acc_s 0.792 both, plain text stages 0.683) at 1.0 s instead of 2.6 s
(docs/erasepro_text_metric.md). The constraint stays exact for any metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from erasekit.backbones.base import Backbone
from erasekit.concepts.features import PairFeatures, capture, layer_columns
from erasekit.concepts.pairs import ConceptSet, token_positions
from erasekit.editing.closed_form import zero_residual_transform
from erasekit.errors import UserError
from erasekit.methods.base import EraseResult, edit_maps, register
from erasekit.methods.erasepro.chain import (
    CHAIN_PATTERNS,
    ProgressiveTargets,
    chain_layers,
    edit_on_arrival,
    segment_of,
)
from erasekit.utils.validation import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, check_numbers


@dataclass
class EraseProConfig:
    progressive: bool = True  # False: projector-only zero-residual edit (the ablation)
    chain: str = "mlp_out"  # which map of each text layer the chain edits: mlp_out | attn_out
    chain_layers: int | None = None  # only the first k layers of each text encoder
    weighted: bool = True  # projectors: preservation-weighted form (M = ridge I + s_p C_P C_P^T); else plain X^+
    weighted_text: bool = True  # text stages: the weighted form too (False: section 3's W_o + W_o (Y - X) X^+)
    text_preserve_prompts: int | None = 16  # the text stages' metric: a sample of the preserved prompts (None: all)
    ridge: float = 0.5
    s_p: float = 0.1  # UCE's public code uses 0.1 when many concepts are preserved
    rtol: float = 1e-12  # eigenvalue cut of the pseudo-inverse (relative)
    batch_size: int = 64

    RANGES: ClassVar = {
        "ridge": POSITIVE,
        "s_p": NON_NEGATIVE,
        "rtol": FRACTION,
        "batch_size": AT_LEAST_ONE,
        "chain_layers": AT_LEAST_ONE,
        "text_preserve_prompts": AT_LEAST_ONE,
    }

    def __post_init__(self):
        check_numbers(self, "ErasePro")
        if self.chain not in CHAIN_PATTERNS:
            raise UserError(f"unknown chain {self.chain!r}; choose one of {', '.join(CHAIN_PATTERNS)}")


@register(
    "erasepro",
    EraseProConfig,
    "ErasePro: zero-residual constraint, progressive shallow-to-deep alignment",
    label="ErasePro",
)
def erase(backbone: Backbone, concepts: ConceptSet, config: EraseProConfig) -> EraseResult:
    pairs = PairFeatures(backbone, concepts)
    chain = chain_layers(backbone, config.chain, config.chain_layers) if config.progressive else []
    # One pass of the original model over the anchors (Y), the sample of preserved prompts that weights the
    # text stages, then the other preserved prompts: the encodings of all, the chain layers' inputs of the first two.
    weigh_text = config.weighted_text and bool(chain)
    sample = preserve_sample(len(pairs.preserve), config.text_preserve_prompts) if weigh_text else []
    sampled = [pairs.preserve[k] for k in sample]
    rest = sorted(set(range(len(pairs.preserve))) - set(sample))
    n_anchors = len(pairs.anchors)
    prompts0 = pairs.anchors + sampled + [pairs.preserve[k] for k in rest]
    states0, inputs0 = capture(backbone, prompts0, dict(chain), config.batch_size, record=n_anchors + len(sample))
    preserve_states = torch.empty((len(pairs.preserve), *states0.shape[1:]), dtype=states0.dtype)
    preserve_states[sample + rest] = states0[n_anchors:]
    sample_positions = token_positions(backbone.token_segments(sampled)) if sampled else []
    # the sample's columns stand for all preserved prompts: s_p scaled so the metric keeps its size
    s_p_text = config.s_p * len(pairs.preserve) / max(len(sample), 1)
    weights: dict[str, torch.Tensor] = {}
    stages = []

    def fit(x, y, c, s_p=config.s_p):
        return zero_residual_transform(x, y, c, config.ridge, s_p, config.rtol)

    def edit_stage(i: int, name: str, module: nn.Linear, targets: torch.Tensor) -> None:
        """Stage i: fit map i to its target inputs (from the model edited so far) and write the edit in."""
        segment = segment_of(name, pairs.target_segments)
        anchors, preserve = inputs0[name][:n_anchors], inputs0[name][n_anchors:]
        transform = fit(
            layer_columns(targets, pairs.alignments, segment, "target"),
            layer_columns(anchors, pairs.alignments, segment, "anchor"),
            layer_columns(preserve, sample_positions, segment, "target") if sampled else None,
            s_p_text,
        )
        new, row = edit_maps(f"text layer {i}", {name: module}, transform)
        module.weight.copy_(new[name])  # later stages see the model as edited so far
        weights.update(new)
        stages.append(row)

    originals = {name: module.weight.detach().clone() for name, module in chain}
    try:
        with torch.no_grad():
            target_states = progressive_target_states(backbone, pairs.targets, chain, edit_stage, config.batch_size)
        x, y, c = pairs.encoded(target_states, states0[:n_anchors], preserve_states)
        transform = fit(x, y, c if config.weighted else None)
        new, row = edit_maps("projectors", backbone.embedding_projectors(), transform)
        weights.update(new)
        stages.append(row)
    finally:
        with torch.no_grad():
            for name, module in chain:
                module.weight.copy_(originals[name])  # the backbone is left as it came; the edit is returned
    return EraseResult(weights, stages, {"pairs": len(pairs.targets), "columns": int(transform.x.shape[1])})


def preserve_sample(count: int, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` of ``count`` preserved prompts, evenly spaced (first and last kept:
    every concept and template is represented, and the empty prompt, which comes last)."""
    if limit is None or count <= limit:
        return list(range(count))
    return sorted({round(k * (count - 1) / max(limit - 1, 1)) for k in range(limit)})


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
    if not chain or len(prompts) <= batch_size:  # (no chain: no hooks, a plain capture in batches)
        with edit_on_arrival(chain, edit_stage):
            return capture(backbone, prompts, batch_size=batch_size)[0]
    progressive = ProgressiveTargets(backbone, prompts, batch_size)
    for i, (name, module) in enumerate(chain):
        edit_stage(i, name, module, progressive.inputs(name, module))
    return progressive.states()

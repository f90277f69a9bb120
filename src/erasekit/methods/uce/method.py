"""UCE, the baseline (specs/erasepro.md section 1): one closed-form ridge solve per projector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from erasekit.backbones.base import Backbone
from erasekit.concepts.features import PairFeatures, capture
from erasekit.concepts.pairs import ConceptSet
from erasekit.editing.closed_form import uce_transform
from erasekit.methods.base import EraseResult, edit_maps, register
from erasekit.utils.validation import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, check_numbers


@dataclass
class UCEConfig:
    ridge: float = 0.5  # lambda, from the public code
    s_e: float = 1.0  # erase weight
    s_p: float = 1.0  # preserve weight (the public code uses 0.1 when many concepts are preserved)
    batch_size: int = 64

    RANGES: ClassVar = {"ridge": POSITIVE, "s_e": POSITIVE, "s_p": NON_NEGATIVE, "batch_size": AT_LEAST_ONE}

    def __post_init__(self) -> None:
        check_numbers(self, "UCE")


@register("uce", UCEConfig, "Unified Concept Editing: ridge-regularised closed form on the projectors", label="UCE")
def erase(backbone: Backbone, concepts: ConceptSet, config: UCEConfig) -> EraseResult:
    pairs = PairFeatures(backbone, concepts)
    states, _ = capture(backbone, pairs.targets + pairs.anchors + pairs.preserve, batch_size=config.batch_size)
    x, y, c = pairs.encoded(*pairs.split(states))
    transform = uce_transform(x, y, c, ridge=config.ridge, s_e=config.s_e, s_p=config.s_p)
    weights, row = edit_maps("projectors", backbone.embedding_projectors(), transform)
    return EraseResult(weights, [row], {"pairs": len(pairs.targets), "columns": x.shape[1]})

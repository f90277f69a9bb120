"""The prompt filter as a method: a table from the concept set's targets to its anchors, carried by the artifact as
its "prompt_filter" entry (kinds.py); no weight changes."""

from __future__ import annotations

from dataclasses import dataclass

from erasekit.backbones.base import Backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.methods.base import EraseResult, register
from erasekit.methods.prompt_filter.filter import PromptFilter
from erasekit.methods.prompt_filter.kinds import KEY


@dataclass
class FilterConfig:
    pass


@register(
    "filter",
    FilterConfig,
    "Prompt filter (baseline): replace the target names in the prompt by their anchors",
    fitted=lambda backbone, concepts, config: [],  # it fits on no prompts: it matches names
    label="prompt filter",
)
def erase(backbone: Backbone, concepts: ConceptSet, config: FilterConfig) -> EraseResult:
    text_filter = PromptFilter(tuple(concepts.targets), tuple(concepts.anchors))
    return EraseResult({}, [], {"words": len(text_filter.words)}, entries={KEY: text_filter.to_json()})

"""A prompt filter: the erasure a platform gets without touching the model, and the baseline that shows the
attacks have teeth (specs/evaluation.md, "Attacks").

Every whole-word occurrence of a target name (case-insensitive) is replaced by its anchor before the text
encoder sees the prompt. Synonyms, paraphrases, learned or soft tokens and prompts found by a search pass
through it, and it is a plug-in: module removal drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from erasekit.backbones.base import Backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.methods.base import EraseResult, register
from erasekit.utils.text import phrase_pattern


@dataclass(frozen=True)
class PromptFilter:
    """Replace whole-word ``words[i]`` by ``replacements[i]`` (longest words first, so phrases win)."""

    words: tuple[str, ...]
    replacements: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.words) != len(self.replacements) or not self.words:
            raise ValueError("a prompt filter needs one replacement per word, and at least one word")
        if any(not w.strip() for w in self.words):
            raise ValueError("a prompt filter word is empty")

    def __call__(self, prompt: str) -> str:
        table = {w.lower(): r for w, r in zip(self.words, self.replacements, strict=True)}
        replaced = phrase_pattern(self.words).sub(lambda m: table[m.group(0).lower()], prompt)
        return re.sub(r"\s+", " ", replaced).strip()

    def to_json(self) -> dict:
        return {"words": list(self.words), "replacements": list(self.replacements)}

    @classmethod
    def from_json(cls, data: dict) -> PromptFilter:
        return cls(tuple(data["words"]), tuple(data["replacements"]))


@dataclass
class FilterConfig:
    pass


@register(
    "filter",
    FilterConfig,
    "Prompt filter (baseline): replace the target names in the prompt by their anchors",
    fitted=lambda backbone, concepts, config: [],  # it fits on no prompts: it matches names
)
def erase(backbone: Backbone, concepts: ConceptSet, config: FilterConfig) -> EraseResult:
    text_filter = PromptFilter(tuple(concepts.targets), tuple(concepts.anchors))
    return EraseResult({}, [], {"words": len(text_filter.words)}, prompt_filter=text_filter.to_json())

"""A prompt filter: the erasure a platform gets without touching the model, and the baseline that shows the
attacks have teeth (specs/evaluation.md, "Attacks").

Every whole-word occurrence of a target name (case-insensitive) is replaced by its anchor before the text
encoder sees the prompt. Case is ignored as Python's ``re.IGNORECASE`` ignores it, letter by letter: "ſtar"
(long s) and "STAR" are "star", "ı" and "İ" are "i"; foldings that change a word's length ("ß" → "ss") are not
applied. Synonyms, paraphrases, learned or soft tokens and prompts found by a search pass
through it, and it is a plug-in: module removal drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from erasekit.errors import UserError
from erasekit.utils.text import phrase_pattern

# re.IGNORECASE also equates "ı" (dotless) and "İ" (dotted capital) with "i", which str.casefold keeps apart
_TURKISH_I = str.maketrans({"ı": "i", "İ": "i"})


def fold(text: str) -> str:
    """One key for every spelling re.IGNORECASE matches as the same text (checked over all of Unicode)."""
    return text.translate(_TURKISH_I).casefold()


def _different_replacements(words: tuple[str, ...], replacements: tuple[str, ...]) -> tuple[str, str] | None:
    """Two words that fold alike but have different replacements (the first such pair), or None."""
    first: dict[str, tuple[str, str]] = {}
    for word, replacement in zip(words, replacements, strict=True):
        seen_word, seen_replacement = first.setdefault(fold(word), (word, replacement))
        if seen_replacement != replacement:
            return seen_word, word
    return None


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
        clash = _different_replacements(self.words, self.replacements)
        if clash:
            raise UserError(
                f"the prompt filter ignores case, so {clash[0]!r} and {clash[1]!r} are one word; give them one anchor"
            )

    @cached_property
    def _table(self) -> dict[str, str]:
        """Replacement by folded word."""
        return {fold(w): r for w, r in zip(self.words, self.replacements, strict=True)}

    @cached_property
    def _pattern(self) -> re.Pattern:
        return phrase_pattern(self.words)

    def __call__(self, prompt: str) -> str:
        replaced = self._pattern.sub(lambda m: self._table[fold(m.group(0))], prompt)
        return re.sub(r"\s+", " ", replaced).strip()

    def to_json(self) -> dict:
        return {"words": list(self.words), "replacements": list(self.replacements)}

    @classmethod
    def from_json(cls, data: dict) -> PromptFilter:
        return cls(tuple(data["words"]), tuple(data["replacements"]))

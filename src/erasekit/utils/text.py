"""Matching concept names in prompt text."""

from __future__ import annotations

import re


def phrase_pattern(words: tuple[str, ...] | list[str]) -> re.Pattern:
    """Any of ``words`` as a whole word or phrase, case-insensitive, longest first (so phrases win)."""
    alternatives = sorted(words, key=len, reverse=True)
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in alternatives) + r")(?!\w)", re.IGNORECASE)

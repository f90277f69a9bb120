"""The prompt filter's artifact plug-in (artifacts/plugins.py): the manifest's "prompt_filter" entry
({"words", "replacements"}), set on the backbone's ``prompt_filter`` while the edit is applied."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from erasekit.artifacts.plugins import EntryKind, register_entry_kind
from erasekit.artifacts.schema import NONBLANK, Items, Record, Schema, Text
from erasekit.errors import UserError
from erasekit.methods.prompt_filter.filter import PromptFilter

KEY = "prompt_filter"


class PromptFilterEntry(EntryKind):
    key = KEY
    label = "prompt filter"

    def schema(self) -> Schema:
        return Record({"words": Items(NONBLANK, least=1), "replacements": Items(Text())})

    def build(self, entry: dict) -> dict:
        """The entry, also under the filter's own rules (one replacement per word, one per folded word)."""
        return PromptFilter.from_json(entry).to_json()

    def attach(self, backbone: Any, value: dict) -> Callable[[], None]:
        if getattr(backbone, "prompt_filter", None) is not None:
            raise UserError("this edit is already applied (the model already carries a prompt filter)")
        backbone.prompt_filter = PromptFilter.from_json(value)

        def undo() -> None:
            backbone.prompt_filter = None

        return undo


register_entry_kind(PromptFilterEntry())

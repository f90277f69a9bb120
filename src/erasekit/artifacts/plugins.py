"""Artifact plug-ins (DESIGN.md, "Closed core"): what a method adds to an edit besides replaced weights.

A method's package registers its plug-ins when ``erasekit.methods`` is imported; the artifact code looks them up by
the manifest's key for them and names no method.

- A **module kind** (``ModuleKind``) is a module added to a linear map's output: the map returns W x + b + Δ(x). The
  manifest lists each under "modules" as {name: {"kind", "d_in", "d_out", ...the kind's own fields}}; its tensors
  are keyed "<linear module>::eraser.<tensor>".
- An **entry kind** (``EntryKind``) is a top-level manifest entry {key: ...} with tensors keyed "::<key>.<tensor>":
  a part that modules share (built before them, handed to their ``build``), or a plug-in of the whole model that
  the artifact carries (``Artifact.entries``) and sets on the backbone while it is applied.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from erasekit.artifacts.schema import Schema

if TYPE_CHECKING:
    from erasekit.artifacts.artifact import Artifact

MODULE_SEP = "::"  # "<linear module>::eraser.<tensor>", "::<entry>.<tensor>": cannot occur in a module name
ERASER = "eraser."


class ModuleKind(ABC):
    """How one kind of module is saved (``describe``, ``own_state``), loaded (``fields``, ``build``), attached to a
    linear map's output (``delta``) and named in messages (``label``). Its modules have ``d_in`` and ``d_out``."""

    kind: ClassVar[str]  # the manifest's "kind"
    label: ClassVar[str]  # one module, in messages ("eraser")
    module_type: ClassVar[type[nn.Module]]  # what ``build_artifact`` accepts as this kind
    one_dtype: ClassVar[bool] = True  # its tensors share one dtype (False: each has the dtype ``build`` gives it)

    @abstractmethod
    def fields(self) -> dict[str, Schema]:
        """The schema of the manifest entry's own fields (besides "kind", "d_in" and "d_out")."""

    @abstractmethod
    def describe(self, module: nn.Module) -> dict:
        """The values of those fields for ``module``."""

    def own_state(self, module: nn.Module) -> dict[str, Tensor]:
        """The tensors saved for this module; parts it shares with others are saved once, by an entry kind."""
        return module.state_dict()

    @abstractmethod
    def build(self, entry: dict, shared: Mapping[str, Any]) -> nn.Module:
        """A module of the entry's shapes to load tensors into, built on the meta device; ``shared`` holds the
        artifact's loaded entries by key. A ValueError or RuntimeError says the entry is inconsistent."""

    @abstractmethod
    def delta(self, linear: nn.Linear, module: nn.Module) -> Callable[[Tensor], Tensor]:
        """Δ as a function of ``linear``'s input: ``module`` is already on the linear's device, in eval mode and
        frozen; the result is cast to the output's dtype."""


class EntryKind(ABC):
    """How one top-level manifest entry is saved (``value``, ``describe``, ``tensors``), loaded (``schema``,
    ``rule``, ``build``, ``check``), set on a backbone (``attach``) and named in messages (``label``)."""

    key: ClassVar[str]  # the manifest's key, and the tensors' prefix "::<key>."
    label: ClassVar[str]  # in messages ("prompt filter")
    carried: ClassVar[bool] = True  # kept in ``Artifact.entries`` (False: derived from the modules that share it)
    one_dtype: ClassVar[bool] = True  # as for ModuleKind, when ``build`` gives a module

    @abstractmethod
    def schema(self) -> Schema:
        """The entry's form."""

    def rule(self, manifest: dict) -> str | None:
        """A problem across the manifest's fields (a schema-checked manifest), or None."""
        return None

    def value(self, artifact: Artifact) -> Any:
        """What the artifact holds for this entry (None: no entry); a ValueError if it is inconsistent."""
        return artifact.entries.get(self.key)

    def describe(self, value: Any) -> Any:
        """The manifest entry (JSON) for ``value``."""
        return value

    def tensors(self, value: Any) -> dict[str, Tensor]:
        """The tensors saved for ``value`` (as "::<key>.<name>")."""
        return value.state_dict() if isinstance(value, nn.Module) else {}

    @abstractmethod
    def build(self, entry: Any) -> Any:
        """The value of a schema-checked entry; a module is built on the meta device and its tensors are loaded
        into it. A ValueError or RuntimeError says the entry is malformed."""

    def check(self, state: dict[str, Tensor]) -> str | None:
        """A problem with the loaded tensors' values (their names and shapes are checked already), or None."""
        return None

    def attach(self, backbone: Any, value: Any) -> Callable[[], None] | None:
        """Set the entry on ``backbone`` while the edit is applied; returns what undoes it (None: nothing to do).
        It runs before the edit changes anything, so it may refuse (a UserError)."""
        return None


MODULE_KINDS: dict[str, ModuleKind] = {}
ENTRY_KINDS: dict[str, EntryKind] = {}


def register_module_kind(kind: ModuleKind) -> ModuleKind:
    if kind.kind in MODULE_KINDS and type(MODULE_KINDS[kind.kind]) is not type(kind):
        raise ValueError(f"module kind {kind.kind!r} is registered already")
    MODULE_KINDS[kind.kind] = kind
    return kind


def register_entry_kind(kind: EntryKind) -> EntryKind:
    if kind.key in ENTRY_KINDS and type(ENTRY_KINDS[kind.key]) is not type(kind):
        raise ValueError(f"manifest entry {kind.key!r} is registered already")
    ENTRY_KINDS[kind.key] = kind
    return kind


def kind_of(name: str, module: nn.Module) -> ModuleKind:
    """The registered kind of ``module`` (the module added to ``name``); ValueError if none is."""
    for kind in MODULE_KINDS.values():
        if isinstance(module, kind.module_type):
            return kind
    known = " or ".join(kind.label for kind in MODULE_KINDS.values()) or "registered module kind"
    raise ValueError(f"the module for {name} is a {type(module).__name__}, not a {known}")


def entry_tensor(key: str, name: str) -> str:
    """The tensors-file key of an entry's tensor: "::<key>.<name>"."""
    return f"{MODULE_SEP}{key}.{name}"


def module_tensor(module: str, name: str) -> str:
    """The tensors-file key of a module's tensor: "<module>::eraser.<name>"."""
    return f"{module}{MODULE_SEP}{ERASER}{name}"

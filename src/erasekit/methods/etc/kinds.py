"""ETC's artifact plug-ins (artifacts/plugins.py): the erasers added to projector outputs (specs/etc.md §4) and the
concept memory the keyed erasers share.

- "moeraser": {"kind", "d_in", "d_out", "config"} (the MoEraserConfig), its parameters saved per projector;
- "keyed": {"kind", "d_in", "d_out", "restore"} (whether it has the NIR restore path), its own parameters saved per
  projector; the memory it reads is the manifest's "memory" entry ({"d", "distributions", "per", "candidates",
  "preserved"}), saved once as "::memory.<buffer>".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from torch import Tensor, nn

from erasekit.artifacts.plugins import EntryKind, ModuleKind, entry_tensor, register_entry_kind, register_module_kind
from erasekit.artifacts.schema import COUNT, SIZE, Flag, Record, Schema, config_schema
from erasekit.methods.etc.keyed import ConceptMemory, KeyedEraser
from erasekit.methods.etc.moeraser import MoEraser, MoEraserConfig

MOERASER, KEYED, MEMORY = "moeraser", "keyed", "memory"
MEMORY_SHAPE = ("d", "distributions", "per", "candidates", "preserved")  # ConceptMemory.describe(), .empty()


class MoEraserKind(ModuleKind):
    kind = MOERASER
    label = "MoEraser"
    module_type = MoEraser

    def fields(self) -> dict[str, Schema]:
        least = {name: int(r.low) for name, r in MoEraserConfig.RANGES.items() if r.low >= 1}  # the config's own ranges
        return {"config": config_schema(MoEraserConfig, least)}

    def describe(self, module: MoEraser) -> dict:
        return {"config": asdict(module.config)}

    def build(self, entry: dict, shared: Mapping[str, Any]) -> MoEraser:
        return MoEraser(entry["d_in"], entry["d_out"], MoEraserConfig(**entry["config"]))

    def delta(self, linear: nn.Linear, module: MoEraser) -> Callable[[Tensor], Tensor]:
        dtype = module.w_gate.dtype  # the eraser keeps its own dtype: x is cast to it
        return lambda x: module(x.to(dtype))


class KeyedKind(ModuleKind):
    kind = KEYED
    label = "keyed eraser"
    module_type = KeyedEraser
    one_dtype = False  # its restore pair is float32, as built

    def fields(self) -> dict[str, Schema]:
        return {"restore": Flag()}

    def describe(self, module: KeyedEraser) -> dict:
        return {"restore": module.restore_in is not None}

    def own_state(self, module: KeyedEraser) -> dict[str, Tensor]:
        return module.own_state()

    def build(self, entry: dict, shared: Mapping[str, Any]) -> KeyedEraser:
        return KeyedEraser(shared[MEMORY], entry["d_in"], entry["d_out"], restore=entry["restore"])

    def delta(self, linear: nn.Linear, module: KeyedEraser) -> Callable[[Tensor], Tensor]:
        # W is the projector's live weight; the eraser casts x itself, so that its memory sees the same tensor from
        # every projector (one key search a pass)
        return module.bind(linear.weight)


MEMORY_VALUES: dict[str, tuple[str, Callable[[Tensor], Tensor]]] = {  # buffer: (its range, the test)
    "residual": ("in [0, 1]", lambda t: (t >= 0) & (t <= 1)),
    "threshold": ("at least 0", lambda t: t >= 0),
    "concept": ("whole numbers in [0, distributions)", lambda t: (t >= 0) & (t < len(t)) & (t == t.round())),
}


class MemoryEntry(EntryKind):
    """The ConceptMemory the keyed erasers share: derived from them when saving, built before them when loading."""

    key = MEMORY
    label = "concept memory"
    carried = False
    one_dtype = False  # float16 centres and keys, float32 the rest

    def schema(self) -> Schema:
        return Record({name: COUNT if name == "preserved" else SIZE for name in MEMORY_SHAPE})

    def rule(self, manifest: dict) -> str | None:
        """A memory entry exactly when some module is keyed."""
        keyed = any(entry["kind"] == KEYED for entry in manifest.get("modules", {}).values())
        if keyed and MEMORY not in manifest:
            return "the keyed modules need the memory entry"
        if MEMORY in manifest and not keyed:
            return "a memory entry without keyed modules"
        return None

    def value(self, artifact) -> ConceptMemory | None:
        """The one memory the keyed erasers share (None without any); a ValueError if there are several."""
        memories = {id(m.memory): m.memory for m in artifact.modules.values() if isinstance(m, KeyedEraser)}
        if len(memories) > 1:
            raise ValueError(f"the keyed erasers of an artifact must share one memory, got {len(memories)}")
        return next(iter(memories.values()), None)

    def describe(self, value: ConceptMemory) -> dict:
        return value.describe()

    def build(self, entry: dict) -> ConceptMemory:
        return ConceptMemory.empty(*(entry[name] for name in MEMORY_SHAPE))

    def check(self, state: dict[str, Tensor]) -> str | None:
        for name, (wanted, test) in MEMORY_VALUES.items():
            if not bool(test(state[name]).all()):
                return f"memory buffer {entry_tensor(MEMORY, name)} must be {wanted}"
        return None


register_module_kind(MoEraserKind())
register_module_kind(KeyedKind())
register_entry_kind(MemoryEntry())

"""The manifest (``manifest.json``): its schema, its hash, how an artifact is written into one and how one is read.

The manifest records the method, its config, the concept set, the base model's identity, the SHA-256 of every weight
the edit replaces or wraps (so an edit is never applied to another model), library versions and a metrics summary.
Plug-ins (artifacts/plugins.py) add their parts: the optional "modules" entry lists the modules added to linear maps'
outputs ({name: {"kind", "d_in", "d_out", ...}}), and each entry kind has its own top-level entry. Each kind gives
the schema of its part; ``manifest_schema`` puts them together.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erasekit.artifacts.plugins import ENTRY_KINDS, MODULE_KINDS, kind_of
from erasekit.artifacts.schema import (
    COUNT,
    MODULE_NAME,
    NONBLANK,
    NONNEGATIVE,
    SHA256,
    SIZE,
    TEMPLATE,
    WEIGHT_NAME,
    Const,
    Flag,
    Items,
    Json,
    Mapping,
    Record,
    Scalar,
    Tagged,
    Text,
    shown,
)
from erasekit.artifacts.tensors import entry_values
from erasekit.errors import UserError

if TYPE_CHECKING:
    from erasekit.artifacts.artifact import Artifact

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
MANIFEST_SHA256 = "erasekit_manifest_sha256"  # the tensors file's metadata entry for the manifest's hash
MAX_MANIFEST_BYTES = 64 * 2**20  # far above any manifest erasekit writes; a larger file is not read
MAX_DEPTH = 32  # JSON nesting a manifest may have (erasekit writes 5 levels)
CLOSED_FORM = ("gap", "residual", "delta", "constraints", "d_in", "maps")  # what reports read of a closed-form stage


# --- the schema -------------------------------------------------------------------------------------------------


def _stage_rule(row: dict) -> str | None:
    present = [key for key in CLOSED_FORM if key in row]
    return None if len(present) in (0, len(CLOSED_FORM)) else f"a closed-form stage has all of {', '.join(CLOSED_FORM)}"


STAGE = Record(  # a row of the edit's stages (methods/base.py stage_row, and the methods' own stage logs)
    {"stage": Text()},
    {
        **dict.fromkeys(("seconds", "peak_mib", "gap", "residual", "delta"), NONNEGATIVE),
        **dict.fromkeys(("maps", "constraints", "rank", "d_in"), COUNT),
        "first": Text(),
        "least_squares": Flag(),
    },
    rest=Json(),
    rule=_stage_rule,
)


def _anchor_rule(concepts: dict) -> str | None:
    return None if len(concepts["anchors"]) == len(concepts["targets"]) else "one anchor per target is needed"


def _entries_rule(manifest: dict) -> str | None:
    """The entry kinds' rules across the manifest: the first problem, or None."""
    return next((problem for kind in ENTRY_KINDS.values() if (problem := kind.rule(manifest))), None)


def _module_schema() -> Tagged:
    """A "modules" entry: the fields every module has, and its kind's own."""
    return Tagged(
        "kind",
        {
            name: Record({"kind": Const(name), "d_in": SIZE, "d_out": SIZE, **kind.fields()})
            for name, kind in MODULE_KINDS.items()
        },
    )


def manifest_schema() -> Record:
    """The manifest's schema: every field ``load_artifact`` and its readers use, with its type and range (the
    registered plug-ins' parts included)."""
    concepts = Record(
        {"targets": Items(NONBLANK, least=1), "anchors": Items(Text())},
        {"preserve": Items(Text()), "kind": NONBLANK, "templates": Items(TEMPLATE)},
        rule=_anchor_rule,
    )
    return Record(
        {
            "format_version": Const(FORMAT_VERSION),
            "method": NONBLANK,
            "config": Mapping(Json()),
            "concepts": concepts,
            "base": Record({"family": NONBLANK}, {"source": Text(), "pipeline_class": Text()}, rest=Scalar()),
            "original_sha256": Mapping(SHA256, key=WEIGHT_NAME),
            "tensors_sha256": SHA256,
        },
        {
            "modules": Mapping(_module_schema(), key=MODULE_NAME),
            **{key: kind.schema() for key, kind in ENTRY_KINDS.items()},
            "metrics": Record(
                {}, {"seconds": NONNEGATIVE, "peak_mib": NONNEGATIVE, "stages": Items(STAGE)}, rest=Json()
            ),
            "versions": Mapping(Text()),
            "created": Text(),
        },
        rule=_entries_rule,
    )


def validate_manifest(manifest: Any) -> None:
    """Raise SchemaError if ``manifest`` (parsed JSON) breaks the schema."""
    manifest_schema().check(manifest, "")


def manifest_sha256(manifest: dict) -> str:
    """SHA-256 of the manifest's content, "tensors_sha256" aside (canonical JSON: sorted keys, no spaces)."""
    content = {key: value for key, value in manifest.items() if key != "tensors_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --- writing ----------------------------------------------------------------------------------------------------


def _module_entry(name: str, module) -> dict:
    kind = kind_of(name, module)
    return {"kind": kind.kind, "d_in": module.d_in, "d_out": module.d_out, **kind.describe(module)}


def manifest_of(artifact: Artifact) -> dict:
    """The manifest fields of an artifact (without ``tensors_sha256``; "modules" and the entries only when it has
    some)."""
    modules = {name: _module_entry(name, module) for name, module in artifact.modules.items()}
    entries = {key: ENTRY_KINDS[key].describe(value) for key, value in entry_values(artifact).items()}
    return {
        "format_version": FORMAT_VERSION,
        "method": artifact.method,
        "config": artifact.config,
        "concepts": artifact.concepts,
        "base": artifact.base,
        "original_sha256": artifact.original_sha256,
        **({"modules": modules} if modules else {}),
        **entries,
        "metrics": artifact.metrics,
        "versions": artifact.versions,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# --- reading ----------------------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(text.split())


def corrupted(problem: str, path: Path) -> UserError:
    return UserError(f"corrupted edit artifact ({one_line(problem)}): {path}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"key {shown(key)} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` levels deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def read_manifest(path: Path) -> dict:
    """The manifest as strict JSON: UTF-8, no NaN or Infinity, no key twice in an object, an object nested at most
    MAX_DEPTH levels; anything else is a one-line UserError."""
    try:
        size = path.stat().st_size
        raw = path.read_bytes() if size <= MAX_MANIFEST_BYTES else None
    except OSError as exc:
        raise UserError(f"could not read {MANIFEST} ({exc.strerror or type(exc).__name__}): {path}") from None
    if raw is None:
        raise corrupted(f"{MANIFEST} has {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have", path)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise corrupted(f"{MANIFEST} is not UTF-8 text", path) from None
    except RecursionError:
        raise corrupted(f"{MANIFEST} is nested too deeply", path) from None
    except ValueError as exc:  # json.JSONDecodeError, and the hooks' refusals
        raise corrupted(f"{MANIFEST} is not strict JSON: {exc}", path) from None
    if not isinstance(data, dict):
        raise corrupted(f"{MANIFEST} is not a JSON object", path)
    if _deeper_than(data, MAX_DEPTH):
        raise corrupted(f"{MANIFEST} is nested too deeply (more than {MAX_DEPTH} levels)", path)
    return data

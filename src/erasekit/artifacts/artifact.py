"""The edit artifact (DESIGN.md, "Architecture"): a folder with ``manifest.json`` and ``tensors.safetensors``.

The manifest records the method, its config, the concept set, the base model's identity, the SHA-256
of every weight the edit replaces or wraps (so an edit is never applied to another model), library
versions and a metrics summary. An edit may also carry MoEraser modules (specs/etc.md §4): per wrapped
projector, a correction Δ added to its output (W c + Δ(c)), listed in the manifest's optional
"modules" entry ({name: {"kind": "moeraser", "d_in", "d_out", "config"}}), or keyed erasers
(methods/etc/keyed.py: {"kind": "keyed", "d_in", "d_out", "restore"}) that share one concept memory, saved once
under "::memory.<buffer>" and described by the manifest's "memory" entry ({"d", "distributions", "per",
"candidates", "preserved"}).
An edit may instead (or also) carry a prompt filter (methods/prompt_filter.py), a text-level plug-in stored in
the manifest's optional "prompt_filter" entry ({"words", "replacements"}).

The tensors file holds the replacement weights, keyed "<linear module>.weight", and the modules'
parameters, keyed "<linear module>::eraser.<parameter>". The separator "::" never occurs in the module
names torch gives diffusers / transformers models, and ``build_artifact`` refuses a name containing it,
so a key splits unambiguously. Tensors are read with safetensors only: nothing is ever unpickled.

Each file guards the other: the manifest records the tensors file's SHA-256 ("tensors_sha256"), and the tensors
file's metadata records the SHA-256 of the rest of the manifest (``manifest_sha256``). Loading checks both, the
manifest against its schema (``manifest_schema``) and every tensor (floating, finite, of the shapes the manifest
implies), so a damaged or edited artifact is a one-line UserError, never a traceback later and never a silently
different edit. This guards against accidents and careless edits, not forgery: nothing is signed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn
from torch.utils.hooks import RemovableHandle

from erasekit.errors import UserError
from erasekit.utils.io import atomic_dir, strict_json, write_json

if TYPE_CHECKING:  # imported where used: erasekit.methods imports every method, which may import artifacts
    from erasekit.methods.etc.moeraser import MoEraser

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
EXPORT_MANIFEST = "erasekit_edit.json"
MANIFEST_SHA256 = "erasekit_manifest_sha256"  # the tensors file's metadata entry for the manifest's hash
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "erasekit")
WEIGHT = ".weight"
MODULE_SEP = "::"  # "<linear module>::eraser.<parameter>": cannot occur in a module name (see above)
ERASER = "eraser."
MEMORY = MODULE_SEP + "memory."  # the keyed erasers' shared memory: "::memory.<buffer>"
MOERASER_KIND = "moeraser"
KEYED_KIND = "keyed"
ATTACHED = "_erasekit_eraser_attached"  # set on a projector while an artifact's eraser hooks it
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # the only dtypes an artifact holds
MAX_MANIFEST_BYTES = 64 * 2**20  # far above any manifest erasekit writes; a larger file is not read
MAX_DEPTH = 32  # JSON nesting a manifest may have (erasekit writes 5 levels)
MAX_SIZE = 2**31 - 1  # the largest dimension or count a manifest may give


@dataclass
class Artifact:
    """An edit: new weights for some linear maps of one base model and MoErasers added to some projectors,
    plus what is needed to trust them.

    ``weights`` holds the replaced weights ("<name>.weight"); ``modules`` maps a wrapped linear module's
    name to its eraser; ``original_sha256`` has the base model's hash of every replaced weight and of the
    weight of every wrapped module (replaced or not).
    """

    method: str
    config: dict
    concepts: dict
    base: dict
    weights: dict[str, torch.Tensor]
    original_sha256: dict[str, str]
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    modules: dict[str, MoEraser] = field(default_factory=dict)
    prompt_filter: dict | None = None  # {"words", "replacements"}: applied to prompts while the edit is on

    @property
    def plugins(self) -> int:
        """How many plug-ins (modules and a prompt filter) the module-removal attack drops."""
        return len(self.modules) + (self.prompt_filter is not None)


@dataclass
class AppliedEdit:
    """An artifact applied to a backbone, with the weights it replaced and the hooks that attach its
    erasers (for ``remove_artifact``)."""

    artifact: Artifact
    originals: dict[str, torch.Tensor]
    hooks: dict[str, RemovableHandle] = field(default_factory=dict)
    filtered: bool = False  # the artifact's prompt filter is set on the backbone


# --- the manifest's schema ------------------------------------------------------------------------------------


class SchemaError(ValueError):
    """A manifest value the schema refuses. ``where`` is its path ("metrics.stages[0].seconds"); ``malformed``: a
    rule across the fields of ``where`` failed, rather than one value's form."""

    def __init__(self, where: str, problem: str, malformed: bool = False) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem, self.malformed = where, problem, malformed

    def describe(self) -> str:
        if self.malformed:
            return f"malformed {self.where or 'manifest'} ({self.problem})"
        return f"manifest field {self.where!r} {self.problem}" if self.where else f"manifest {self.problem}"


def _shown(key: str) -> str:
    text = repr(key)
    return text if len(text) <= 120 else text[:117] + "..."


def _is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode (JSON's "\\ud800" escapes can make lone surrogates, which no file holds)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_key(key: str, where: str) -> None:
    if not _is_text(key):
        raise SchemaError(where, f"has key {_shown(key)}, which is not valid Unicode text")


def _join(where: str, key: str) -> str:
    """The path of ``key`` inside ``where``: "a.b" for a plain name, "a['odd key']" otherwise."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{where}.{key}" if where else key
    return f"{where}[{_shown(key)}]"


class Schema:
    """The expected form of a JSON value: ``check(value, where)`` raises SchemaError naming the path ``where``.
    A leaf says what it wants (``what``) and whether a value is that (``accepts``)."""

    what = "a JSON value"

    def accepts(self, value: Any) -> bool:
        return True

    def check(self, value: Any, where: str) -> None:
        if not self.accepts(value):
            raise SchemaError(where, f"must be {self.what}")


@dataclass(frozen=True)
class Num(Schema):
    """A finite number (an integer if ``whole``; never a boolean) in [low, high]."""

    low: float = -math.inf
    high: float = math.inf
    whole: bool = False

    @property
    def what(self) -> str:
        kind = "an integer" if self.whole else "a finite number"
        if self.high < math.inf:
            return f"{kind} in [{self.low}, {self.high}]"
        return f"{kind} >= {self.low}" if self.low > -math.inf else kind

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.whole else int | float):
            return False
        try:
            number = float(value)  # an integer too large for a float is no finite number either
        except OverflowError:
            return False
        return math.isfinite(number) and self.low <= value <= self.high


@dataclass(frozen=True)
class Text(Schema):
    """Valid Unicode text matching ``pattern`` (whole)."""

    pattern: str = r"(?s).*"
    what: str = "a string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and _is_text(value) and re.fullmatch(self.pattern, value) is not None

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, str) and not _is_text(value):
            raise SchemaError(where, "must be valid Unicode text")
        super().check(value, where)


class Flag(Schema):
    what = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Const(Schema):
    value: Any

    @property
    def what(self) -> str:
        return repr(self.value)

    def accepts(self, value: Any) -> bool:
        return type(value) is type(self.value) and value == self.value


class Json(Schema):
    """Any JSON value: finite numbers and valid text at every depth."""

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                _check_key(key, where)
                self.check(item, _join(where, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.check(item, f"{where}[{i}]")
        elif isinstance(value, str):
            Text().check(value, where)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            Num().check(value, where)


class Scalar(Json):
    what = "a string, a number, true, false or null"

    def accepts(self, value: Any) -> bool:
        return not isinstance(value, dict | list)

    def check(self, value: Any, where: str) -> None:
        Schema.check(self, value, where)
        super().check(value, where)


@dataclass(frozen=True)
class Items(Schema):
    """A list of at least ``least`` items of one form."""

    item: Schema
    least: int = 0

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(where, "must be a list")
        if len(value) < self.least:
            raise SchemaError(where, f"must hold at least {self.least} item(s)")
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]")


@dataclass(frozen=True)
class Mapping(Schema):
    """An object with any keys of the form ``key``, every value of the form ``value``."""

    value: Schema
    key: Text = Text()

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, "must be an object")
        for key, item in value.items():
            _check_key(key, where)
            if not self.key.accepts(key):
                raise SchemaError(where, f"has key {_shown(key)}, not {self.key.what}")
            self.value.check(item, _join(where, key))


@dataclass(frozen=True)
class Record(Schema):
    """An object with the ``required`` fields, perhaps the ``optional`` ones, any other field of the form ``rest``
    (None: no other field), and a ``rule`` across its fields (it returns the problem, or None)."""

    required: dict[str, Schema]
    optional: dict[str, Schema] = field(default_factory=dict)
    rest: Schema | None = None
    rule: Callable[[dict], str | None] | None = None

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, "must be an object")
        if missing := [name for name in self.required if name not in value]:
            raise SchemaError(_join(where, missing[0]), "is missing")
        known = self.required | self.optional
        for name, item in value.items():
            _check_key(name, where)
            if name in known:
                known[name].check(item, _join(where, name))
            elif self.rest is None:
                raise SchemaError(_join(where, name), "is not a field erasekit writes")
            else:
                self.rest.check(item, _join(where, name))
        if self.rule is not None and (problem := self.rule(value)):
            raise SchemaError(where, problem, malformed=True)


@dataclass(frozen=True)
class Tagged(Schema):
    """An object whose ``tag`` field picks its form among ``variants``."""

    tag: str
    variants: dict[str, Record]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, "must be an object")
        kind = value.get(self.tag)
        if not isinstance(kind, str) or kind not in self.variants:
            raise SchemaError(_join(where, self.tag), f"must be one of {', '.join(map(repr, self.variants))}")
        self.variants[kind].check(value, where)


SIZE = Num(1, MAX_SIZE, whole=True)  # a dimension, or a count of at least one
COUNT = Num(0, MAX_SIZE, whole=True)
NONNEGATIVE = Num(0)
NONBLANK = Text(r"(?s).*\S.*", "a non-blank string")
SHA256 = Text(r"[0-9a-f]{64}", "a SHA-256 (64 lowercase hex digits)")
MODULE_NAME = Text(r"(?s)(?:(?!::).)+", "a module name (not empty, no '::')")
WEIGHT_NAME = Text(r"(?s)(?:(?!::).)+\.weight", "a weight name ('<module>.weight', no '::')")
TEMPLATE = Text(r"(?s)(?:(?!\{\}).)*\{\}(?:(?!\{\}).)*", "a template with exactly one '{}'")
CLOSED_FORM = ("gap", "residual", "delta", "constraints", "d_in", "maps")  # what reports read of a closed-form stage


def _stage_rule(row: dict) -> str | None:
    present = [key for key in CLOSED_FORM if key in row]
    return None if len(present) in (0, len(CLOSED_FORM)) else f"a closed-form stage has all of {', '.join(CLOSED_FORM)}"


STAGE = Record(  # a row of the edit's stages (methods/base.py stage_row, methods/etc/method.py StageLog)
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


def _memory_rule(manifest: dict) -> str | None:
    """A memory entry exactly when some module is keyed."""
    keyed = any(entry["kind"] == KEYED_KIND for entry in manifest.get("modules", {}).values())
    if keyed and "memory" not in manifest:
        return "the keyed modules need the memory entry"
    if "memory" in manifest and not keyed:
        return "a memory entry without keyed modules"
    return None


def _config_schema(config_class: type, least: dict[str, int]) -> Record:
    """The fields of a config dataclass, each optional (a missing one takes its default), by their defaults' types:
    integers at least ``least`` (0 where it names none), numbers at least 0."""

    def form(f) -> Schema:
        if type(f.default) is int:
            return Num(least.get(f.name, 0), MAX_SIZE, whole=True)
        return {float: NONNEGATIVE, bool: Flag(), str: Text()}[type(f.default)]

    return Record({}, {f.name: form(f) for f in fields(config_class)})


@cache
def manifest_schema() -> Record:
    """The manifest's schema: every field ``load_artifact`` and its readers use, with its type and range."""
    from erasekit.methods.etc.moeraser import MoEraserConfig

    dims = {"d_in": SIZE, "d_out": SIZE}
    least = {name: int(r.low) for name, r in MoEraserConfig.RANGES.items() if r.low >= 1}  # the config's own ranges
    moeraser = _config_schema(MoEraserConfig, least)
    module = Tagged(
        "kind",
        {
            MOERASER_KIND: Record({"kind": Const(MOERASER_KIND), **dims, "config": moeraser}),
            KEYED_KIND: Record({"kind": Const(KEYED_KIND), **dims, "restore": Flag()}),
        },
    )
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
            "modules": Mapping(module, key=MODULE_NAME),
            "memory": Record({"d": SIZE, "distributions": SIZE, "per": SIZE, "candidates": SIZE, "preserved": COUNT}),
            "prompt_filter": Record({"words": Items(NONBLANK, least=1), "replacements": Items(Text())}),
            "metrics": Record(
                {}, {"seconds": NONNEGATIVE, "peak_mib": NONNEGATIVE, "stages": Items(STAGE)}, rest=Json()
            ),
            "versions": Mapping(Text()),
            "created": Text(),
        },
        rule=_memory_rule,
    )


def validate_manifest(manifest: Any) -> None:
    """Raise SchemaError if ``manifest`` (parsed JSON) breaks the schema."""
    manifest_schema().check(manifest, "")


def manifest_sha256(manifest: dict) -> str:
    """SHA-256 of the manifest's content, "tensors_sha256" aside (canonical JSON: sorted keys, no spaces)."""
    content = {key: value for key, value in manifest.items() if key != "tensors_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --- building and saving ----------------------------------------------------------------------------------------


def editable_linears(backbone) -> dict[str, nn.Linear]:
    """Every linear map an edit may replace, by name: the text layers and the projectors."""
    return dict(backbone.text_layers()) | backbone.projectors()


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 over dtype, shape and the raw bytes of the tensor (any device, any layout)."""
    t = t.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries an artifact depends on (absent ones are left out)."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _check_name(backbone, linears: dict[str, nn.Linear], name: str) -> None:
    if name not in linears or MODULE_SEP in name:
        raise ValueError(f"{name} is not an editable linear module of this {backbone.identity()['family']} model")


def build_artifact(
    backbone,
    method: str,
    config: dict,
    concepts: dict,
    new_weights: dict[str, torch.Tensor],
    metrics: dict,
    modules: dict[str, MoEraser] | None = None,
    prompt_filter: dict | None = None,
) -> Artifact:
    """An Artifact replacing the named linear modules' weights and adding ``modules`` (name -> MoEraser,
    kept as given, not copied) to the named linear modules' outputs; records the hashes of the current
    weights of both. A non-finite weight or module tensor is a UserError."""
    from erasekit.methods.etc.keyed import KeyedEraser
    from erasekit.methods.etc.moeraser import MoEraser

    linears = editable_linears(backbone)
    weights, original = {}, {}
    for name, tensor in (new_weights or {}).items():
        _check_name(backbone, linears, name)
        current = linears[name].weight
        if tuple(tensor.shape) != tuple(current.shape):
            raise ValueError(f"new weight for {name} has shape {tuple(tensor.shape)}, expected {tuple(current.shape)}")
        key = name + WEIGHT
        original[key] = tensor_sha256(current)
        weights[key] = tensor.detach().to(device="cpu", dtype=current.dtype, copy=True).contiguous()
    for name, eraser in (modules or {}).items():
        _check_name(backbone, linears, name)
        linear = linears[name]
        if not isinstance(eraser, MoEraser | KeyedEraser):
            raise ValueError(f"the module for {name} is a {type(eraser).__name__}, not a MoEraser or KeyedEraser")
        if (eraser.d_in, eraser.d_out) != (linear.in_features, linear.out_features):
            raise ValueError(
                f"{type(eraser).__name__} for {name} maps {eraser.d_in} -> {eraser.d_out}, "
                f"the module {linear.in_features} -> {linear.out_features}"
            )
        original[name + WEIGHT] = tensor_sha256(linear.weight)
    _shared_memory(modules or {})
    artifact = Artifact(
        method=method,
        config=dict(config),
        concepts=dict(concepts),
        base=dict(backbone.identity()),
        weights=weights,
        original_sha256=original,
        metrics=dict(metrics or {}),
        versions=library_versions(),
        modules=dict(modules or {}),
        prompt_filter=dict(prompt_filter) if prompt_filter else None,
    )
    _refuse_non_finite(_stored_tensors(artifact))
    return artifact


def _shared_memory(modules: dict):
    """The one ConceptMemory the keyed erasers among ``modules`` share (None without any); ValueError if several."""
    from erasekit.methods.etc.keyed import KeyedEraser

    memories = {id(e.memory): e.memory for e in modules.values() if isinstance(e, KeyedEraser)}
    if len(memories) > 1:
        raise ValueError(f"the keyed erasers of an artifact must share one memory, got {len(memories)}")
    return next(iter(memories.values()), None)


def _stored_tensors(artifact: Artifact) -> dict[str, torch.Tensor]:
    """Every tensor the tensors file holds, by key, where it lies (weights, the modules' own tensors, the memory)."""
    tensors = dict(artifact.weights)
    for name, eraser in artifact.modules.items():
        own = eraser.own_state() if hasattr(eraser, "own_state") else eraser.state_dict()
        tensors |= {f"{name}{MODULE_SEP}{ERASER}{param}": t for param, t in own.items()}
    if (memory := _shared_memory(artifact.modules)) is not None:
        tensors |= {MEMORY + key: t for key, t in memory.state_dict().items()}
    return tensors


def _map_name(key: str) -> str:
    """The map a tensors-file key belongs to: the linear module, or the keyed erasers' memory."""
    return "keyed memory" if key.startswith(MEMORY) else key.partition(MODULE_SEP)[0].removesuffix(WEIGHT)


def _refuse_non_finite(tensors: dict[str, torch.Tensor]) -> None:
    bad = sorted({_map_name(key) for key, t in tensors.items() if not bool(torch.isfinite(t.detach()).all())})
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        hint = "check --ridge / --s-e / --s-p"
        raise UserError(f"the erasure produced non-finite weights (maps: {shown}); nothing was saved — {hint}")


def _module_entry(eraser) -> dict:
    from erasekit.methods.etc.keyed import KeyedEraser

    if isinstance(eraser, KeyedEraser):
        return {
            "kind": KEYED_KIND,
            "d_in": eraser.d_in,
            "d_out": eraser.d_out,
            "restore": eraser.restore_in is not None,
        }
    return {"kind": MOERASER_KIND, "d_in": eraser.d_in, "d_out": eraser.d_out, "config": asdict(eraser.config)}


def _manifest(artifact: Artifact) -> dict:
    """The manifest fields of an artifact (without ``tensors_sha256``; "modules" only when it has some)."""
    modules = {"modules": {name: _module_entry(e) for name, e in artifact.modules.items()}} if artifact.modules else {}
    if (memory := _shared_memory(artifact.modules)) is not None:
        modules["memory"] = memory.describe()
    return {
        "format_version": FORMAT_VERSION,
        "method": artifact.method,
        "config": artifact.config,
        "concepts": artifact.concepts,
        "base": artifact.base,
        "original_sha256": artifact.original_sha256,
        **modules,
        **({"prompt_filter": artifact.prompt_filter} if artifact.prompt_filter else {}),
        "metrics": artifact.metrics,
        "versions": artifact.versions,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_artifact(artifact: Artifact, out: Path, overwrite: bool = False) -> Path:
    """Write the artifact folder atomically: ``out`` appears only once both files are complete. An ``out`` that
    exists and is not empty is replaced only with ``overwrite``. Non-finite tensors, or a manifest that would not
    load, are a UserError before anything is written."""
    tensors = _stored_tensors(artifact)
    _refuse_non_finite(tensors)
    manifest = strict_json(_manifest(artifact))
    try:  # the manifest as it will be written; its "tensors_sha256" is known only once the tensors file is
        validate_manifest({**manifest, "tensors_sha256": hashlib.sha256(b"").hexdigest()})
    except SchemaError as exc:
        raise UserError(f"the edit cannot be saved ({exc.describe()}); nothing was saved") from None
    out = Path(out)
    with atomic_dir(out, overwrite) as tmp:
        metadata = {"format": "pt", MANIFEST_SHA256: manifest_sha256(manifest)}
        save_file({key: t.detach().cpu().contiguous() for key, t in tensors.items()}, str(tmp / TENSORS), metadata)
        file_sha = hashlib.sha256((tmp / TENSORS).read_bytes()).hexdigest()
        write_json(tmp / MANIFEST, {**manifest, "tensors_sha256": file_sha})
    return out


# --- loading ----------------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _corrupted(problem: str, path: Path) -> UserError:
    return UserError(f"corrupted edit artifact ({_one_line(problem)}): {path}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"key {_shown(key)} appears twice in one object")
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


def _read_manifest(path: Path) -> dict:
    """The manifest as strict JSON: UTF-8, no NaN or Infinity, no key twice in an object, an object nested at most
    MAX_DEPTH levels; anything else is a one-line UserError."""
    try:
        size = path.stat().st_size
        raw = path.read_bytes() if size <= MAX_MANIFEST_BYTES else None
    except OSError as exc:
        raise UserError(f"could not read {MANIFEST} ({exc.strerror or type(exc).__name__}): {path}") from None
    if raw is None:
        raise _corrupted(f"{MANIFEST} has {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have", path)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise _corrupted(f"{MANIFEST} is not UTF-8 text", path) from None
    except RecursionError:
        raise _corrupted(f"{MANIFEST} is nested too deeply", path) from None
    except ValueError as exc:  # json.JSONDecodeError, and the hooks' refusals
        raise _corrupted(f"{MANIFEST} is not strict JSON: {exc}", path) from None
    if not isinstance(data, dict):
        raise _corrupted(f"{MANIFEST} is not a JSON object", path)
    if _deeper_than(data, MAX_DEPTH):
        raise _corrupted(f"{MANIFEST} is nested too deeply (more than {MAX_DEPTH} levels)", path)
    return data


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes (which safetensors has read successfully)."""
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    metadata = header.get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


def _read_tensors(manifest: dict, path: Path, manifest_path: Path) -> dict[str, torch.Tensor]:
    """The tensors file, after checking both hashes: its own (in the manifest) and the manifest's (in it)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"could not read {TENSORS} ({exc.strerror or type(exc).__name__}): {path}") from None
    if hashlib.sha256(data).hexdigest() != manifest["tensors_sha256"]:
        raise _corrupted(f"{TENSORS} does not match the SHA-256 {MANIFEST} records: it was changed or damaged", path)
    try:
        tensors = safetensors.torch.load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UserError(f"could not read {TENSORS} ({_one_line(str(exc)) or type(exc).__name__}): {path}") from None
    recorded = _metadata(data).get(MANIFEST_SHA256)
    if recorded is None:
        raise UserError(
            f"{TENSORS} records no hash of {MANIFEST}: the edit artifact was saved by an older erasekit or rewritten "
            f"by another tool; re-run `erasekit erase` to make it again: {path.parent}"
        )
    if recorded != manifest_sha256(manifest):
        problem = f"{MANIFEST} was changed after it was saved: it does not match the hash {TENSORS} records"
        raise _corrupted(problem, manifest_path)
    return tensors


def _check_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Every tensor of one of FLOAT_DTYPES and finite."""
    for key, t in tensors.items():
        if t.dtype not in FLOAT_DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
            raise _corrupted(f"tensor {_shown(key)} is {t.dtype}, an artifact holds only {names}", path)
        if not bool(torch.isfinite(t).all()):
            raise _corrupted(f"tensor {_shown(key)} holds NaN or infinite values", path)


def load_artifact(path: Path) -> Artifact:
    """Read and verify an artifact folder; every problem is a one-line UserError."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"edit artifact folder not found: {path}")
    manifest_path, tensors_path = path / MANIFEST, path / TENSORS
    if not manifest_path.is_file():
        raise UserError(f"not an edit artifact (no {MANIFEST}): {path}")
    if not tensors_path.is_file():
        raise UserError(f"incomplete edit artifact (no {TENSORS}): {path}")
    manifest = _read_manifest(manifest_path)
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != FORMAT_VERSION:
        raise UserError(f"unsupported artifact format_version {version} (this erasekit reads {FORMAT_VERSION}): {path}")
    try:
        validate_manifest(manifest)
    except SchemaError as exc:
        raise _corrupted(exc.describe(), manifest_path) from None
    prompt_filter = _checked_filter(manifest.get("prompt_filter"), manifest_path)
    tensors = _read_tensors(manifest, tensors_path, manifest_path)
    _check_tensors(tensors, tensors_path)
    entries = manifest.get("modules", {})
    weights = {key: t for key, t in tensors.items() if MODULE_SEP not in key}
    if set(weights) | {name + WEIGHT for name in entries} != set(manifest["original_sha256"]):
        raise _corrupted(f"{TENSORS} and {MANIFEST} name different weights", tensors_path)
    _check_weight_shapes(weights, entries, tensors_path)
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in entries}
    memory_state = {key.removeprefix(MEMORY): t for key, t in tensors.items() if key.startswith(MEMORY)}
    for key, t in tensors.items():
        if MODULE_SEP in key and not key.startswith(MEMORY):
            name, _, param = key.partition(MODULE_SEP)
            if name not in states or not param.startswith(ERASER):
                raise _corrupted(f"{TENSORS} has tensor {_shown(key)} for no module of {MANIFEST}", tensors_path)
            states[name][param.removeprefix(ERASER)] = t
    if memory_state and "memory" not in manifest:
        raise _corrupted(f"{TENSORS} has memory tensors, {MANIFEST} no memory entry", tensors_path)
    memory = _load_memory(manifest["memory"], memory_state, tensors_path) if "memory" in manifest else None
    modules = {name: _load_eraser(name, entry, states[name], tensors_path, memory) for name, entry in entries.items()}
    return Artifact(
        method=manifest["method"],
        config=manifest["config"],
        concepts=manifest["concepts"],
        base=manifest["base"],
        weights=weights,
        original_sha256=manifest["original_sha256"],
        metrics=manifest.get("metrics", {}),
        versions=manifest.get("versions", {}),
        modules=modules,
        prompt_filter=prompt_filter,
    )


def _checked_filter(entry: dict | None, path: Path) -> dict | None:
    """The manifest's prompt filter, also under the filter's own rules (None when the edit has none)."""
    from erasekit.methods.prompt_filter import PromptFilter

    if entry is None:
        return None
    try:
        return PromptFilter.from_json(entry).to_json()
    except ValueError as exc:  # a UserError too
        raise _corrupted(f"malformed prompt_filter ({exc})", path) from None


def _check_weight_shapes(weights: dict[str, torch.Tensor], entries: dict, path: Path) -> None:
    """Every weight a matrix; a wrapped module's replaced weight (d_out, d_in) as its manifest entry says."""
    for key, t in weights.items():
        entry = entries.get(key.removesuffix(WEIGHT))
        expected = (entry["d_out"], entry["d_in"]) if entry else None
        if t.dim() != 2 or expected not in (None, tuple(t.shape)):
            wanted = f"shape {expected}" if expected else "a matrix"
            raise _corrupted(f"weight {_shown(key)} has shape {tuple(t.shape)}, expected {wanted}", path)


def _checked_state(
    module: nn.Module, state: dict[str, torch.Tensor], label: str, owner: str, path: Path, one_dtype: bool = True
) -> dict:
    """``state`` if it holds exactly the module's tensors, each of the module's shape, in one dtype. ``label`` names
    the kind of module in the messages, ``owner`` the module whose tensors are keyed "<owner>::eraser.<name>" (""
    for the shared memory, "::memory.<name>"); ``one_dtype``: each tensor of the module's own dtype if False."""
    expected = {key: tuple(p.shape) for key, p in module.state_dict().items()}
    dtypes = {key: p.dtype for key, p in module.state_dict().items()}
    of = f" for {owner}" if owner else ""
    if set(state) != set(expected):
        raise _corrupted(f"{TENSORS} has {label} tensors {sorted(state)}{of}, expected {sorted(expected)}", path)
    prefix = f"{owner}{MODULE_SEP}{ERASER}" if owner else MEMORY
    for key, t in state.items():
        if tuple(t.shape) != expected[key] or (not one_dtype and t.dtype != dtypes[key]):
            wanted = f"shape {expected[key]}" + ("" if one_dtype else f" of {dtypes[key]}")
            raise _corrupted(f"{label} tensor {prefix}{key} is {t.dtype} {tuple(t.shape)}, expected {wanted}", path)
    found = sorted({str(t.dtype) for t in state.values()})
    if one_dtype and len(found) > 1:
        raise _corrupted(f"{label} tensors{of} mix dtypes {', '.join(found)}", path)
    return state


MEMORY_VALUES: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {  # buffer: (its range, the test)
    "residual": ("in [0, 1]", lambda t: (t >= 0) & (t <= 1)),
    "threshold": ("at least 0", lambda t: t >= 0),
    "concept": ("whole numbers in [0, distributions)", lambda t: (t >= 0) & (t < len(t)) & (t == t.round())),
}


def _load_memory(entry: dict, state: dict[str, torch.Tensor], path: Path):
    """The keyed erasers' shared ConceptMemory, checked against the manifest's "memory" entry (built on the meta
    device, so nothing is allocated before the shapes are checked)."""
    from erasekit.methods.etc.keyed import ConceptMemory

    try:
        with torch.device("meta"):
            memory = ConceptMemory.empty(*(entry[k] for k in ("d", "distributions", "per", "candidates", "preserved")))
    except (ValueError, RuntimeError) as exc:
        raise _corrupted(f"{MANIFEST} has a memory entry no memory fits ({exc})", path) from None
    state = _checked_state(memory, state, "concept memory", "", path, one_dtype=False)  # float16 centres
    for name, (wanted, test) in MEMORY_VALUES.items():
        if not bool(test(state[name]).all()):
            raise _corrupted(f"memory buffer {MEMORY}{name} must be {wanted}", path)
    memory.load_state_dict(state, strict=True, assign=True)
    return memory


def _load_eraser(name: str, entry: dict, state: dict[str, torch.Tensor], path: Path, memory=None):
    """A MoEraser or KeyedEraser rebuilt from its (schema-checked) manifest entry, on the meta device so nothing is
    allocated before the shapes are checked, with the tensors file's parameters, strictly; every problem is a
    one-line UserError."""
    from erasekit.methods.etc.keyed import KeyedEraser
    from erasekit.methods.etc.moeraser import MoEraser, MoEraserConfig

    keyed = entry["kind"] == KEYED_KIND
    label = "keyed eraser" if keyed else "MoEraser"
    try:
        with torch.device("meta"):
            if keyed:
                eraser = KeyedEraser(memory, entry["d_in"], entry["d_out"], restore=entry["restore"])
            else:
                eraser = MoEraser(entry["d_in"], entry["d_out"], MoEraserConfig(**entry["config"]))
    except (ValueError, RuntimeError) as exc:
        raise _corrupted(f"{MANIFEST} module {name} has a bad {label} config ({exc})", path) from None
    if keyed:
        state = {**state, **{f"memory.{k}": v for k, v in memory.state_dict().items()}}
    state = _checked_state(eraser, state, label, name, path, one_dtype=not keyed)
    eraser.load_state_dict(state, strict=True, assign=True)
    return eraser


def _targets(backbone, artifact: Artifact) -> dict[str, nn.Linear]:
    """The module for every weight of the artifact, after checking family, names, shapes and hashes."""
    family, made_for = backbone.identity()["family"], artifact.base.get("family")
    if family != made_for:
        raise UserError(f"artifact was made for a {made_for} model, not this {family} model")
    linears = editable_linears(backbone)
    base = artifact.base.get("source", made_for)
    targets = {}
    for key, tensor in artifact.weights.items():
        name = key.removesuffix(WEIGHT)
        if not key.endswith(WEIGHT) or name not in linears:
            raise UserError(f"artifact was made for a different base model ({base}): no module {name} here")
        current = linears[name].weight
        if tuple(current.shape) != tuple(tensor.shape):
            raise UserError(
                f"artifact was made for a different base model ({base}): weight {key} has shape "
                f"{tuple(current.shape)} here, {tuple(tensor.shape)} in the artifact"
            )
        sha = tensor_sha256(current)
        if sha != artifact.original_sha256[key]:
            if sha == tensor_sha256(tensor.to(current.dtype)):
                raise UserError(f"this edit is already applied (weight {key} already carries it)")
            raise UserError(f"artifact was made for a different base model ({base}): weight {key} does not match")
        targets[key] = linears[name]
    return targets


def _wrapped(backbone, artifact: Artifact, attach: bool) -> dict[str, nn.Linear]:
    """The module for every eraser of the artifact, after checking names, shapes and hashes (the weights a
    module-only edit leaves alone) and, when attaching, that no eraser is attached there already."""
    linears = editable_linears(backbone)
    base = artifact.base.get("source", artifact.base.get("family"))
    wrapped = {}
    for name, eraser in artifact.modules.items():
        if name not in linears:
            raise UserError(f"artifact was made for a different base model ({base}): no module {name} here")
        linear, key = linears[name], name + WEIGHT
        if (linear.in_features, linear.out_features) != (eraser.d_in, eraser.d_out):
            raise UserError(
                f"artifact was made for a different base model ({base}): module {name} maps "
                f"{linear.in_features} -> {linear.out_features} here, {eraser.d_in} -> {eraser.d_out} in the artifact"
            )
        if key not in artifact.weights and tensor_sha256(linear.weight) != artifact.original_sha256.get(key):
            raise UserError(f"artifact was made for a different base model ({base}): weight {key} does not match")
        if attach and getattr(linear, ATTACHED, False):
            raise UserError(f"this edit is already applied (module {name} already carries a MoEraser)")
        wrapped[name] = linear
    return wrapped


def _attach(linear: nn.Linear, eraser: MoEraser) -> RemovableHandle:
    """Hook ``linear`` so that it returns W x + b + eraser(x). The eraser itself is attached: moved to the
    linear's device if needed, put in eval mode and frozen (no parameter gradients; gradients still flow
    to x). It keeps its own dtype: x is cast to it and Δ back to the output's dtype."""
    eraser.to(device=linear.weight.device).eval().requires_grad_(False)
    if hasattr(eraser, "bind"):  # a keyed eraser: W is the projector's live weight; it casts x itself, so that
        eraser.bind(linear.weight)  # its memory sees the same tensor from every projector (one key search a pass)
        dtype = None
    else:
        dtype = eraser.w_gate.dtype

    def add_delta(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
        x = args[0] if args else kwargs["input"]
        return output + eraser(x if dtype is None else x.to(dtype)).to(output.dtype)

    handle = linear.register_forward_hook(add_delta, with_kwargs=True)
    setattr(linear, ATTACHED, True)  # a plain attribute, not a submodule: state_dict and names are unchanged
    return handle


def apply_artifact(backbone, artifact: Artifact, modules: bool = True) -> AppliedEdit:
    """Patch the backbone's weights in place and, if ``modules``, hook every eraser onto its projector
    (``modules=False``, the module-removal attack, applies the weights only). Everything is checked
    before anything changes."""
    targets = _targets(backbone, artifact)
    wrapped = _wrapped(backbone, artifact, attach=modules)
    originals = {key: module.weight.detach().clone() for key, module in targets.items()}
    with torch.no_grad():
        for key, module in targets.items():
            module.weight.data.copy_(artifact.weights[key])
    hooks = {name: _attach(linear, artifact.modules[name]) for name, linear in wrapped.items()} if modules else {}
    filtered = modules and artifact.prompt_filter is not None
    if filtered:
        from erasekit.methods.prompt_filter import PromptFilter

        backbone.prompt_filter = PromptFilter.from_json(artifact.prompt_filter)
    return AppliedEdit(artifact=artifact, originals=originals, hooks=hooks, filtered=filtered)


def remove_artifact(backbone, applied: AppliedEdit) -> None:
    """Detach the erasers, put the replaced weights back in place and check they hash to the recorded
    originals."""
    linears = editable_linears(backbone)
    if applied.filtered:
        backbone.prompt_filter = None
    for name, handle in applied.hooks.items():
        handle.remove()
        if hasattr(linears[name], ATTACHED):
            delattr(linears[name], ATTACHED)
    with torch.no_grad():
        for key, original in applied.originals.items():
            linears[key.removesuffix(WEIGHT)].weight.data.copy_(original)
    for key in applied.originals:
        if tensor_sha256(linears[key.removesuffix(WEIGHT)].weight) != applied.artifact.original_sha256[key]:
            raise RuntimeError(f"weight {key} does not match the original after removing the edit")


def export_artifact(backbone, artifact: Artifact, out: Path, overwrite: bool = False) -> Path:
    """Write a full diffusers folder (``save_pretrained``) of the edited model, plus ``erasekit_edit.json``.

    The backbone is edited only while saving and is back to its base model afterwards.
    """
    if artifact.prompt_filter:
        raise UserError("this edit is a prompt filter, which a diffusers folder cannot hold; use it with --edit")
    if artifact.modules:
        raise UserError(
            f"this edit carries MoEraser modules ({len(artifact.modules)}), which a plain diffusers folder "
            "cannot hold; use it with --edit"
        )
    pipe = getattr(backbone, "pipe", None)
    if pipe is None:
        raise UserError("export writes a diffusers folder; ShapeWorld edits are used with --edit")
    out = Path(out)
    applied = apply_artifact(backbone, artifact)
    try:
        with atomic_dir(out, overwrite) as tmp:
            pipe.save_pretrained(str(tmp), safe_serialization=True)
            write_json(tmp / EXPORT_MANIFEST, _manifest(artifact))
    finally:
        remove_artifact(backbone, applied)
    return out

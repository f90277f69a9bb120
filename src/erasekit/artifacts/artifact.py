"""The edit artifact (DESIGN.md, "Architecture"): a folder with ``manifest.json`` and ``tensors.safetensors``.

The manifest records the method, its config, the concept set, the base model's identity, the SHA-256
of every weight the edit replaces or wraps (so an edit is never applied to another model), library
versions and a metrics summary. An edit may also carry MoEraser modules (specs/etc.md §4): per wrapped
projector, a correction Δ added to its output (W c + Δ(c)), listed in the manifest's optional
"modules" entry ({name: {"kind": "moeraser", "d_in", "d_out", "config"}}), or keyed erasers
(methods/etc/keyed.py: {"kind": "keyed", "d_in", "d_out", "restore"}) that share one concept memory, saved once
under "::memory.<buffer>" and described by the manifest's "memory" entry ({"d", "distributions", "per",
"candidates"}).
An edit may instead (or also) carry a prompt filter (methods/prompt_filter.py), a text-level plug-in stored in
the manifest's optional "prompt_filter" entry ({"words", "replacements"}).

The tensors file holds the replacement weights, keyed "<linear module>.weight", and the modules'
parameters, keyed "<linear module>::eraser.<parameter>". The separator "::" never occurs in the module
names torch gives diffusers / transformers models, and ``build_artifact`` refuses a name containing it,
so a key splits unambiguously. Tensors are read with safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn
from torch.utils.hooks import RemovableHandle

from erasekit.errors import UserError
from erasekit.utils.io import atomic_dir, read_json_object, write_json

if TYPE_CHECKING:  # imported where used: erasekit.methods imports every method, which may import artifacts
    from erasekit.methods.etc.moeraser import MoEraser, MoEraserConfig

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
EXPORT_MANIFEST = "erasekit_edit.json"
MANIFEST_KEYS = ("format_version", "method", "config", "concepts", "base", "original_sha256", "tensors_sha256")
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "erasekit")
WEIGHT = ".weight"
MODULE_SEP = "::"  # "<linear module>::eraser.<parameter>": cannot occur in a module name (see above)
ERASER = "eraser."
MEMORY = MODULE_SEP + "memory."  # the keyed erasers' shared memory: "::memory.<buffer>"
MOERASER_KIND = "moeraser"
KEYED_KIND = "keyed"
ATTACHED = "_erasekit_eraser_attached"  # set on a projector while an artifact's eraser hooks it


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
    weights of both."""
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
    return Artifact(
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


def _shared_memory(modules: dict):
    """The one ConceptMemory the keyed erasers among ``modules`` share (None without any); ValueError if several."""
    from erasekit.methods.etc.keyed import KeyedEraser

    memories = {id(e.memory): e.memory for e in modules.values() if isinstance(e, KeyedEraser)}
    if len(memories) > 1:
        raise ValueError(f"the keyed erasers of an artifact must share one memory, got {len(memories)}")
    return next(iter(memories.values()), None)


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
    exists and is not empty is replaced only with ``overwrite``."""
    out = Path(out)
    with atomic_dir(out, overwrite) as tmp:
        tensors = {key: t.detach().cpu().contiguous() for key, t in artifact.weights.items()}
        for name, eraser in artifact.modules.items():
            own = eraser.own_state() if hasattr(eraser, "own_state") else eraser.state_dict()
            for param, t in own.items():
                tensors[f"{name}{MODULE_SEP}{ERASER}{param}"] = t.detach().cpu().contiguous()
        if (memory := _shared_memory(artifact.modules)) is not None:
            tensors |= {MEMORY + key: t.detach().cpu().contiguous() for key, t in memory.state_dict().items()}
        save_file(tensors, str(tmp / TENSORS), metadata={"format": "pt"})
        file_sha = hashlib.sha256((tmp / TENSORS).read_bytes()).hexdigest()
        write_json(tmp / MANIFEST, {**_manifest(artifact), "tensors_sha256": file_sha})
    return out


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
    manifest = read_json_object(manifest_path, MANIFEST)
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise UserError(f"{MANIFEST} lacks {', '.join(missing)}: {manifest_path}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise UserError(
            f"unsupported artifact format_version {manifest['format_version']!r} "
            f"(this erasekit reads {FORMAT_VERSION}): {path}"
        )
    if not isinstance(manifest["original_sha256"], dict) or not isinstance(manifest["base"], dict):
        raise UserError(f"{MANIFEST} has malformed base or original_sha256: {manifest_path}")
    data = tensors_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["tensors_sha256"]:
        raise UserError(f"{TENSORS} is corrupted (its SHA-256 does not match the manifest): {tensors_path}")
    try:
        tensors = safetensors.torch.load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UserError(f"could not read {TENSORS} ({str(exc).strip() or type(exc).__name__}): {path}") from exc
    entries = manifest.get("modules", {})
    if not isinstance(entries, dict):
        raise UserError(f"{MANIFEST} has malformed modules: {manifest_path}")
    weights = {key: t for key, t in tensors.items() if MODULE_SEP not in key}
    if set(weights) | {name + WEIGHT for name in entries} != set(manifest["original_sha256"]):
        raise UserError(f"{TENSORS} and {MANIFEST} name different weights: {path}")
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in entries}
    memory_state = {key.removeprefix(MEMORY): t for key, t in tensors.items() if key.startswith(MEMORY)}
    for key, t in tensors.items():
        if MODULE_SEP in key and not key.startswith(MEMORY):
            name, _, param = key.partition(MODULE_SEP)
            if name not in states or not param.startswith(ERASER):
                raise UserError(f"{TENSORS} has tensor {key} for no module of {MANIFEST}: {path}")
            states[name][param.removeprefix(ERASER)] = t
    memory = _load_memory(manifest, memory_state, path) if memory_state or "memory" in manifest else None
    modules = {name: _load_eraser(name, entry, states[name], path, memory) for name, entry in entries.items()}
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
        prompt_filter=_checked_filter(manifest.get("prompt_filter"), manifest_path),
    )


def _checked_filter(entry, manifest_path: Path) -> dict | None:
    """The manifest's prompt filter, validated (None when the edit has none)."""
    from erasekit.methods.prompt_filter import PromptFilter

    if entry is None:
        return None
    try:
        return PromptFilter.from_json(entry).to_json()
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{MANIFEST} has a malformed prompt_filter entry: {manifest_path}") from None


def _eraser_config(entry: dict) -> MoEraserConfig:
    """The MoEraserConfig of a manifest entry: known fields of the right type (missing ones take the
    defaults); ValueError otherwise."""
    from erasekit.methods.etc.moeraser import MoEraserConfig

    config = entry.get("config")
    if not isinstance(config, dict):
        raise ValueError("no config")
    types = {f.name: type(f.default) for f in fields(MoEraserConfig)}
    for key, value in config.items():
        wanted = types.get(key)
        if wanted is None:
            raise ValueError(f"unknown config field {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float) if wanted is float else wanted):
            raise ValueError(f"config field {key} is {value!r}")
    config = MoEraserConfig(**config)
    if config.experts < 1 or config.hidden < 1:
        raise ValueError("experts and hidden must be at least 1")
    return config


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _checked_state(
    module: nn.Module, state: dict[str, torch.Tensor], label: str, owner: str, path: Path, one_dtype: bool = True
) -> dict:
    """``state`` if it holds exactly the module's tensors, each floating and of the module's shape, in one dtype.
    ``label`` names the kind of module in the messages, ``owner`` the module whose tensors are keyed
    "<owner>::eraser.<name>" ("" for the shared memory, "::memory.<name>"); ``one_dtype``: each tensor of the
    module's own dtype if False."""
    expected = {key: tuple(p.shape) for key, p in module.state_dict().items()}
    dtypes = {key: p.dtype for key, p in module.state_dict().items()}
    of = f" for {owner}" if owner else ""
    if set(state) != set(expected):
        raise UserError(f"{TENSORS} has {label} tensors {sorted(state)}{of}, expected {sorted(expected)}: {path}")
    prefix = f"{owner}{MODULE_SEP}{ERASER}" if owner else MEMORY
    for key, t in state.items():
        if tuple(t.shape) != expected[key] or not t.is_floating_point() or (not one_dtype and t.dtype != dtypes[key]):
            raise UserError(
                f"{label} tensor {prefix}{key} is {t.dtype} {tuple(t.shape)}, "
                f"expected a floating tensor of shape {expected[key]}: {path}"
            )
    found = sorted({str(t.dtype) for t in state.values()})
    if one_dtype and len(found) > 1:
        raise UserError(f"{label} tensors{of} mix dtypes {', '.join(found)}: {path}")
    return state


def _load_memory(manifest: dict, state: dict[str, torch.Tensor], path: Path):
    """The keyed erasers' shared ConceptMemory, checked against the manifest's "memory" entry."""
    from erasekit.methods.etc.keyed import ConceptMemory

    entry, fields = manifest.get("memory"), ("d", "distributions", "per", "candidates", "preserved")
    if (
        not isinstance(entry, dict)
        or set(entry) != set(fields)
        or not all(_positive_int(entry[k]) for k in fields[:-1])
        or not (_positive_int(entry["preserved"]) or (type(entry["preserved"]) is int and entry["preserved"] == 0))
    ):
        raise UserError(f"{MANIFEST} has a missing or malformed memory entry: {path}")
    with torch.device("meta"):
        memory = ConceptMemory.empty(*(entry[k] for k in fields))
    state = _checked_state(memory, state, "concept memory", "", path, one_dtype=False)  # float16 centres
    memory.load_state_dict(state, strict=True, assign=True)
    return memory


def _load_eraser(name: str, entry, state: dict[str, torch.Tensor], path: Path, memory=None):
    """A MoEraser or KeyedEraser rebuilt from its manifest entry (on the meta device, so nothing is allocated
    before the shapes are checked) with the tensors file's parameters, strictly; every problem is a one-line
    UserError."""
    from erasekit.methods.etc.keyed import KeyedEraser
    from erasekit.methods.etc.moeraser import MoEraser

    kind = entry.get("kind") if isinstance(entry, dict) else entry
    if kind not in (MOERASER_KIND, KEYED_KIND):
        raise UserError(f"{MANIFEST} module {name} has unknown kind {kind!r}: {path}")
    label = "MoEraser" if kind == MOERASER_KIND else "keyed eraser"
    d_in, d_out = entry.get("d_in"), entry.get("d_out")
    try:
        if not (_positive_int(d_in) and _positive_int(d_out)):
            raise ValueError(f"d_in {d_in!r}, d_out {d_out!r}")
        if kind == KEYED_KIND:
            if memory is None or not isinstance(entry.get("restore"), bool):
                raise ValueError("a keyed eraser needs the artifact's memory and a boolean restore")
            eraser = KeyedEraser(memory, d_in, d_out, restore=entry["restore"])
            state = {**state, **{f"memory.{k}": v for k, v in memory.state_dict().items()}}
        else:
            with torch.device("meta"):
                eraser = MoEraser(d_in, d_out, _eraser_config(entry))
    except ValueError as exc:
        raise UserError(f"{MANIFEST} module {name} has a bad {label} config ({exc}): {path}") from exc
    state = _checked_state(eraser, state, label, name, path, one_dtype=kind == MOERASER_KIND)
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

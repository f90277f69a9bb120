"""Saving and loading an artifact folder: ``manifest.json`` and ``tensors.safetensors`` (DESIGN.md, "Artifact").

The tensors file holds the replacement weights, keyed "<linear module>.weight", the added modules' tensors, keyed
"<linear module>::eraser.<tensor>", and the manifest entries' tensors, keyed "::<entry>.<tensor>". The separator
"::" never occurs in the module names torch gives diffusers / transformers models, and ``build_artifact`` refuses a
name containing it, so a key splits unambiguously. Tensors are read with safetensors only: nothing is unpickled.

Each file guards the other: the manifest records the tensors file's SHA-256 ("tensors_sha256"), and the tensors
file's metadata records the SHA-256 of the rest of the manifest (``manifest_sha256``). Loading checks both, the
manifest against its schema (``manifest_schema``) and every tensor (floating, finite, of the shapes the manifest
implies), so a damaged or edited artifact is a one-line UserError, never a traceback later and never a silently
different edit. This guards against accidents and careless edits, not forgery: nothing is signed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from erasekit.artifacts.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    MANIFEST_SHA256,
    TENSORS,
    corrupted,
    manifest_of,
    manifest_sha256,
    one_line,
    read_manifest,
    validate_manifest,
)
from erasekit.artifacts.plugins import (
    ENTRY_KINDS,
    ERASER,
    MODULE_KINDS,
    MODULE_SEP,
    EntryKind,
    entry_tensor,
    module_tensor,
)
from erasekit.artifacts.schema import SchemaError, shown
from erasekit.artifacts.tensors import FLOAT_DTYPES, WEIGHT, refuse_non_finite, stored_tensors
from erasekit.errors import UserError
from erasekit.utils.io import atomic_dir, strict_json, write_json

if TYPE_CHECKING:
    from erasekit.artifacts.artifact import Artifact


def save_artifact(artifact: Artifact, out: Path, overwrite: bool = False) -> Path:
    """Write the artifact folder atomically: ``out`` appears only once both files are complete. An ``out`` that
    exists and is not empty is replaced only with ``overwrite``. Non-finite tensors, or a manifest that would not
    load, are a UserError before anything is written."""
    tensors = stored_tensors(artifact)
    refuse_non_finite(tensors)
    manifest = strict_json(manifest_of(artifact))
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


def read_artifact(path: Path) -> dict[str, Any]:
    """The fields of the Artifact in folder ``path``, read and verified; every problem is a one-line UserError."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"edit artifact folder not found: {path}")
    manifest_path, tensors_path = path / MANIFEST, path / TENSORS
    if not manifest_path.is_file():
        raise UserError(f"not an edit artifact (no {MANIFEST}): {path}")
    if not tensors_path.is_file():
        raise UserError(f"incomplete edit artifact (no {TENSORS}): {path}")
    manifest = _checked_manifest(manifest_path)
    built = {
        key: _build_entry(kind, manifest[key], manifest_path) for key, kind in ENTRY_KINDS.items() if key in manifest
    }
    tensors = _read_tensors(manifest, tensors_path, manifest_path)
    _check_tensors(tensors, tensors_path)
    weights, module_states, entry_states = _split(tensors, manifest, tensors_path)
    loaded = {
        key: _load_entry(ENTRY_KINDS[key], value, entry_states[key], tensors_path) for key, value in built.items()
    }
    modules = {
        name: _load_module(name, entry, module_states[name], loaded, tensors_path)
        for name, entry in manifest.get("modules", {}).items()
    }
    return {
        "method": manifest["method"],
        "config": manifest["config"],
        "concepts": manifest["concepts"],
        "base": manifest["base"],
        "weights": weights,
        "original_sha256": manifest["original_sha256"],
        "metrics": manifest.get("metrics", {}),
        "versions": manifest.get("versions", {}),
        "modules": modules,
        "entries": {key: value for key, value in loaded.items() if ENTRY_KINDS[key].carried},
    }


def _checked_manifest(path: Path) -> dict:
    """The manifest, of this format version and valid under the schema."""
    manifest = read_manifest(path)
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != FORMAT_VERSION:
        raise UserError(
            f"unsupported artifact format_version {version} (this erasekit reads {FORMAT_VERSION}): {path.parent}"
        )
    try:
        validate_manifest(manifest)
    except SchemaError as exc:
        raise corrupted(exc.describe(), path) from None
    return manifest


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
        raise corrupted(f"{TENSORS} does not match the SHA-256 {MANIFEST} records: it was changed or damaged", path)
    try:
        tensors = safetensors.torch.load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UserError(f"could not read {TENSORS} ({one_line(str(exc)) or type(exc).__name__}): {path}") from None
    recorded = _metadata(data).get(MANIFEST_SHA256)
    if recorded is None:
        raise UserError(
            f"{TENSORS} records no hash of {MANIFEST}: the edit artifact was saved by an older erasekit or rewritten "
            f"by another tool; re-run `erasekit erase` to make it again: {path.parent}"
        )
    if recorded != manifest_sha256(manifest):
        problem = f"{MANIFEST} was changed after it was saved: it does not match the hash {TENSORS} records"
        raise corrupted(problem, manifest_path)
    return tensors


def _check_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Every tensor of one of FLOAT_DTYPES and finite."""
    for key, t in tensors.items():
        if t.dtype not in FLOAT_DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
            raise corrupted(f"tensor {shown(key)} is {t.dtype}, an artifact holds only {names}", path)
        if not bool(torch.isfinite(t).all()):
            raise corrupted(f"tensor {shown(key)} holds NaN or infinite values", path)


Tensors = dict[str, torch.Tensor]


def _split(tensors: Tensors, manifest: dict, path: Path) -> tuple[Tensors, dict[str, Tensors], dict[str, Tensors]]:
    """The tensors file's weights (checked against the manifest's hashes and modules), each module's tensors and
    each entry's tensors (by module name and entry key; every entry of the manifest is there)."""
    entries = manifest.get("modules", {})
    weights = {key: t for key, t in tensors.items() if MODULE_SEP not in key}
    if set(weights) | {name + WEIGHT for name in entries} != set(manifest["original_sha256"]):
        raise corrupted(f"{TENSORS} and {MANIFEST} name different weights", path)
    _check_weight_shapes(weights, entries, path)
    modules: dict[str, Tensors] = {name: {} for name in entries}
    entry_states: dict[str, Tensors] = {key: {} for key in ENTRY_KINDS if key in manifest}
    for key, t in tensors.items():
        owner, sep, rest = key.partition(MODULE_SEP)
        if not sep:
            continue
        if not owner and (entry := rest.partition(".")[0]) in ENTRY_KINDS:  # "::<entry>.<tensor>"
            if entry not in entry_states:
                raise corrupted(f"{TENSORS} has {entry} tensors, {MANIFEST} no {entry} entry", path)
            entry_states[entry][rest.partition(".")[2]] = t
        elif owner in modules and rest.startswith(ERASER):
            modules[owner][rest.removeprefix(ERASER)] = t
        else:
            raise corrupted(f"{TENSORS} has tensor {shown(key)} for no module of {MANIFEST}", path)
    return weights, modules, entry_states


def _check_weight_shapes(weights: Tensors, entries: dict, path: Path) -> None:
    """Every weight a matrix; a wrapped module's replaced weight (d_out, d_in) as its manifest entry says."""
    for key, t in weights.items():
        entry = entries.get(key.removesuffix(WEIGHT))
        expected = (entry["d_out"], entry["d_in"]) if entry else None
        if t.dim() != 2 or expected not in (None, tuple(t.shape)):
            wanted = f"shape {expected}" if expected else "a matrix"
            raise corrupted(f"weight {shown(key)} has shape {tuple(t.shape)}, expected {wanted}", path)


def _checked_state(
    expected: Tensors, state: Tensors, label: str, key: Callable[[str], str], owner: str, path: Path, one_dtype: bool
) -> Tensors:
    """``state`` if it holds exactly the ``expected`` tensors (a module's, on the meta device), each of its shape, all
    in one dtype (``one_dtype``) or each of its own. ``label`` names the kind in messages, ``key(name)`` a tensor's
    key in the tensors file, ``owner`` the module the tensors belong to ("" for an entry)."""
    of = f" for {owner}" if owner else ""
    if set(state) != set(expected):
        raise corrupted(f"{TENSORS} has {label} tensors {sorted(state)}{of}, expected {sorted(expected)}", path)
    for name, t in state.items():
        shape, dtype = tuple(expected[name].shape), expected[name].dtype
        if tuple(t.shape) != shape or (not one_dtype and t.dtype != dtype):
            wanted = f"shape {shape}" + ("" if one_dtype else f" of {dtype}")
            raise corrupted(f"{label} tensor {key(name)} is {t.dtype} {tuple(t.shape)}, expected {wanted}", path)
    found = sorted({str(t.dtype) for t in state.values()})
    if one_dtype and len(found) > 1:
        raise corrupted(f"{label} tensors{of} mix dtypes {', '.join(found)}", path)
    return state


def _build_entry(kind: EntryKind, entry: Any, path: Path) -> Any:
    """An entry's value from its (schema-checked) manifest entry, before the tensors are read: a module is built on
    the meta device, to load its tensors into once their shapes are checked."""
    try:
        with torch.device("meta"):
            return kind.build(entry)
    except (ValueError, RuntimeError) as exc:  # a UserError too
        raise corrupted(f"malformed {kind.key} ({exc})", path) from None


def _load_entry(kind: EntryKind, value: Any, state: Tensors, path: Path) -> Any:
    """``value`` with its tensors loaded, when it is a module; any other value holds no tensors."""
    if not isinstance(value, nn.Module):
        if state:
            raise corrupted(f"{TENSORS} has {kind.key} tensors, its {MANIFEST} entry none", path)
        return value
    state = _checked_state(
        value.state_dict(), state, kind.label, partial(entry_tensor, kind.key), "", path, kind.one_dtype
    )
    if problem := kind.check(state):
        raise corrupted(problem, path)
    value.load_state_dict(state, strict=True, assign=True)
    return value


def _load_module(name: str, entry: dict, state: Tensors, shared: dict[str, Any], path: Path) -> nn.Module:
    """A module rebuilt from its (schema-checked) manifest entry, on the meta device so nothing is allocated before
    the shapes are checked, with its tensors from the tensors file, strictly; every problem is a one-line UserError."""
    kind = MODULE_KINDS[entry["kind"]]
    try:
        with torch.device("meta"):
            module = kind.build(entry, shared)
    except (ValueError, RuntimeError) as exc:
        raise corrupted(f"{MANIFEST} module {name} has a bad {kind.label} config ({exc})", path) from None
    state = _checked_state(
        kind.own_state(module), state, kind.label, partial(module_tensor, name), name, path, kind.one_dtype
    )
    module.load_state_dict({**module.state_dict(), **state}, strict=True, assign=True)  # shared parts: loaded already
    return module

"""The edit artifact (DESIGN.md, "Architecture"): a folder with ``manifest.json`` and ``tensors.safetensors``.

The manifest records the method, its config, the concept set, the base model's identity, the SHA-256
of every weight the edit replaces (so an edit is never applied to another model), library versions
and a metrics summary. The tensors file holds the replacement weights, keyed "<linear module>.weight".
Tensors are read with safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from erasekit.errors import UserError
from erasekit.utils.io import atomic_dir, read_json_object, write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
EXPORT_MANIFEST = "erasekit_edit.json"
MANIFEST_KEYS = ("format_version", "method", "config", "concepts", "base", "original_sha256", "tensors_sha256")
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "erasekit")
WEIGHT = ".weight"


@dataclass
class Artifact:
    """An edit: new weights for some linear maps of one base model, plus what is needed to trust them."""

    method: str
    config: dict
    concepts: dict
    base: dict
    weights: dict[str, torch.Tensor]
    original_sha256: dict[str, str]
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)


@dataclass
class AppliedEdit:
    """An artifact applied to a backbone, with the weights it replaced (for ``remove_artifact``)."""

    artifact: Artifact
    originals: dict[str, torch.Tensor]


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


def build_artifact(
    backbone, method: str, config: dict, concepts: dict, new_weights: dict[str, torch.Tensor], metrics: dict
) -> Artifact:
    """An Artifact replacing the named linear modules' weights; records the hashes of the current weights."""
    linears = editable_linears(backbone)
    weights, original = {}, {}
    for name, tensor in new_weights.items():
        if name not in linears:
            raise ValueError(f"{name} is not an editable linear module of this {backbone.identity()['family']} model")
        current = linears[name].weight
        if tuple(tensor.shape) != tuple(current.shape):
            raise ValueError(f"new weight for {name} has shape {tuple(tensor.shape)}, expected {tuple(current.shape)}")
        key = name + WEIGHT
        original[key] = tensor_sha256(current)
        weights[key] = tensor.detach().to(device="cpu", dtype=current.dtype, copy=True).contiguous()
    return Artifact(
        method=method,
        config=dict(config),
        concepts=dict(concepts),
        base=dict(backbone.identity()),
        weights=weights,
        original_sha256=original,
        metrics=dict(metrics or {}),
        versions=library_versions(),
    )


def _manifest(artifact: Artifact) -> dict:
    """The manifest fields of an artifact (without ``tensors_sha256``)."""
    return {
        "format_version": FORMAT_VERSION,
        "method": artifact.method,
        "config": artifact.config,
        "concepts": artifact.concepts,
        "base": artifact.base,
        "original_sha256": artifact.original_sha256,
        "metrics": artifact.metrics,
        "versions": artifact.versions,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_artifact(artifact: Artifact, out: Path) -> Path:
    """Write the artifact folder atomically: ``out`` appears only once both files are complete."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        tensors = {key: t.detach().cpu().contiguous() for key, t in artifact.weights.items()}
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
        weights = safetensors.torch.load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UserError(f"could not read {TENSORS} ({str(exc).strip() or type(exc).__name__}): {path}") from exc
    if set(weights) != set(manifest["original_sha256"]):
        raise UserError(f"{TENSORS} and {MANIFEST} name different weights: {path}")
    return Artifact(
        method=manifest["method"],
        config=manifest["config"],
        concepts=manifest["concepts"],
        base=manifest["base"],
        weights=weights,
        original_sha256=manifest["original_sha256"],
        metrics=manifest.get("metrics", {}),
        versions=manifest.get("versions", {}),
    )


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


def apply_artifact(backbone, artifact: Artifact) -> AppliedEdit:
    """Patch the backbone's weights in place; everything is checked before anything changes."""
    targets = _targets(backbone, artifact)
    originals = {key: module.weight.detach().clone() for key, module in targets.items()}
    with torch.no_grad():
        for key, module in targets.items():
            module.weight.data.copy_(artifact.weights[key])
    return AppliedEdit(artifact=artifact, originals=originals)


def remove_artifact(backbone, applied: AppliedEdit) -> None:
    """Put the replaced weights back in place and check they hash to the recorded originals."""
    linears = editable_linears(backbone)
    with torch.no_grad():
        for key, original in applied.originals.items():
            linears[key.removesuffix(WEIGHT)].weight.data.copy_(original)
    for key in applied.originals:
        if tensor_sha256(linears[key.removesuffix(WEIGHT)].weight) != applied.artifact.original_sha256[key]:
            raise RuntimeError(f"weight {key} does not match the original after removing the edit")


def export_artifact(backbone, artifact: Artifact, out: Path) -> Path:
    """Write a full diffusers folder (``save_pretrained``) of the edited model, plus ``erasekit_edit.json``.

    The backbone is edited only while saving and is back to its base model afterwards.
    """
    pipe = getattr(backbone, "pipe", None)
    if pipe is None:
        raise UserError("export writes a diffusers folder; ShapeWorld edits are used with --edit")
    out = Path(out)
    applied = apply_artifact(backbone, artifact)
    try:
        with atomic_dir(out) as tmp:
            pipe.save_pretrained(str(tmp), safe_serialization=True)
            write_json(tmp / EXPORT_MANIFEST, _manifest(artifact))
    finally:
        remove_artifact(backbone, applied)
    return out

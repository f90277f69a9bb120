"""The edit artifact (DESIGN.md, "Architecture"): a folder with ``manifest.json`` and ``tensors.safetensors``.

An edit replaces the weights of some linear maps of one base model and may add plug-ins (artifacts/plugins.py):
modules added to linear maps' outputs, and manifest entries such as a text filter. ``Artifact`` holds them with what
is needed to trust them; the manifest (artifacts/manifest.py), saving and loading (artifacts/store.py) and applying
(artifacts/apply.py) live beside it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from erasekit.artifacts.apply import (
    AppliedEdit,
    apply_to,
    artifact_applied,
    as_backbone,
    export_artifact,
    remove_from,
)
from erasekit.artifacts.plugins import ENTRY_KINDS, MODULE_SEP, kind_of
from erasekit.artifacts.store import read_artifact, save_artifact
from erasekit.artifacts.tensors import WEIGHT, editable_linears, refuse_non_finite, stored_tensors, tensor_sha256

VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "erasekit")


@dataclass
class Artifact:
    """An edit: new weights for some linear maps of one base model, modules added to some linear maps' outputs and
    manifest entries (its plug-ins), plus what is needed to trust them.

    ``weights`` holds the replaced weights ("<name>.weight"); ``modules`` maps a wrapped linear module's name to the
    module added to its output; ``entries`` holds the plug-in entries the artifact carries, by manifest key (read
    also as attributes: ``artifact.<key>``, None when the edit has none); ``original_sha256`` has the base model's
    hash of every replaced weight and of the weight of every wrapped module (replaced or not).

    >>> with artifact.applied(backbone):  # doctest: +SKIP
    ...     images = backbone.generate(["a cat"], [0])
    """

    method: str
    config: dict
    concepts: dict
    base: dict
    weights: dict[str, torch.Tensor]
    original_sha256: dict[str, str]
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    modules: dict[str, nn.Module] = field(default_factory=dict)
    entries: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        """A registered entry by its manifest key (None when the edit has none)."""
        kind = ENTRY_KINDS.get(name) if not name.startswith("_") and name != "entries" else None
        if kind is None or not kind.carried:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.entries.get(name)

    @property
    def plugins(self) -> int:
        """How many plug-ins (modules and entries) the module-removal attack drops."""
        return len(self.modules) + len(self.entries)

    def save(self, path: Path | str, overwrite: bool = False) -> Path:
        """Write the artifact folder (``save_artifact``)."""
        return save_artifact(self, Path(path), overwrite)

    def apply(self, target: Any, modules: bool = True) -> AppliedEdit:
        """Apply the edit to a Backbone or a diffusers pipeline object in place; returns the handle ``remove`` takes.
        ``modules=False`` applies the replaced weights only (the module-removal attack)."""
        return apply_to(target, self, modules)

    def remove(self, target: Any) -> None:
        """Undo ``apply``: ``target`` is its handle, or the Backbone or pipeline the edit was applied to."""
        remove_from(target, self)

    def export(self, target: Any, out: Path | str, overwrite: bool = False) -> Path:
        """Write the edited model as a diffusers folder (``export_artifact``); an edit with plug-ins is refused."""
        return export_artifact(as_backbone(target), self, Path(out), overwrite)

    @contextmanager
    def applied(self, target: Any, modules: bool = True) -> Iterator[AppliedEdit]:
        """The edit applied inside the block, removed on the way out (also when the block raises)."""
        with artifact_applied(as_backbone(target), self, modules) as applied:
            yield applied


def load_artifact(path: Path | str) -> Artifact:
    """Read and verify an artifact folder; every problem is a one-line UserError."""
    return Artifact(**read_artifact(Path(path)))


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


def _replaced_weights(backbone, linears: dict[str, nn.Linear], new_weights: dict[str, torch.Tensor]):
    """The new weights, keyed "<name>.weight" (CPU copies in the module's dtype), and the current ones' hashes."""
    weights, original = {}, {}
    for name, tensor in new_weights.items():
        _check_name(backbone, linears, name)
        current = linears[name].weight
        if tuple(tensor.shape) != tuple(current.shape):
            raise ValueError(f"new weight for {name} has shape {tuple(tensor.shape)}, expected {tuple(current.shape)}")
        key = name + WEIGHT
        original[key] = tensor_sha256(current)
        weights[key] = tensor.detach().to(device="cpu", dtype=current.dtype, copy=True).contiguous()
    return weights, original


def _wrapped_hashes(backbone, linears: dict[str, nn.Linear], modules: dict[str, nn.Module]) -> dict[str, str]:
    """The hash of every wrapped linear's current weight, after checking each module is of a registered kind and
    maps the linear's dimensions."""
    original = {}
    for name, module in modules.items():
        _check_name(backbone, linears, name)
        linear = linears[name]
        kind_of(name, module)
        if (module.d_in, module.d_out) != (linear.in_features, linear.out_features):
            raise ValueError(
                f"{type(module).__name__} for {name} maps {module.d_in} -> {module.d_out}, "
                f"the module {linear.in_features} -> {linear.out_features}"
            )
        original[name + WEIGHT] = tensor_sha256(linear.weight)
    return original


def build_artifact(
    backbone,
    method: str,
    config: dict,
    concepts: dict,
    new_weights: dict[str, torch.Tensor],
    metrics: dict,
    modules: dict[str, nn.Module] | None = None,
    **entries: Any,
) -> Artifact:
    """An Artifact replacing the named linear modules' weights, adding ``modules`` (name -> module of a registered
    kind, kept as given, not copied) to the named linear modules' outputs, and carrying ``entries`` (by the manifest
    key of a registered entry kind; None: none); records the hashes of the current weights of both. A non-finite
    weight or module tensor is a UserError."""
    if unknown := sorted(set(entries) - set(ENTRY_KINDS)):
        raise ValueError(f"no artifact plug-in is registered for the entry {unknown[0]!r}")
    linears = editable_linears(backbone)
    weights, original = _replaced_weights(backbone, linears, new_weights or {})
    original |= _wrapped_hashes(backbone, linears, modules or {})
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
        entries={key: value for key, value in entries.items() if value is not None},
    )
    refuse_non_finite(stored_tensors(artifact))
    return artifact

"""Applying an edit to a loaded model and removing it again; exporting the edited model as a diffusers folder.

``apply_artifact`` replaces weights in place and attaches each added module to its linear map with a forward hook
(the map returns W x + b + Δ(x)); the entries a plug-in sets on the backbone (a text filter) are set while the edit is
on. ``remove_artifact`` undoes all of it and checks the weights hash to the recorded originals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from erasekit.artifacts.manifest import manifest_of
from erasekit.artifacts.plugins import ENTRY_KINDS, kind_of
from erasekit.artifacts.tensors import WEIGHT, editable_linears, matches_in_half_precision, tensor_sha256
from erasekit.backbones.base import Backbone
from erasekit.backbones.loader import load_backbone
from erasekit.errors import UserError
from erasekit.utils.io import atomic_dir, write_json

if TYPE_CHECKING:
    from erasekit.artifacts.artifact import Artifact

EXPORT_MANIFEST = "erasekit_edit.json"
ATTACHED = "_erasekit_eraser_attached"  # set on a linear map while an artifact's module hooks it (to its label)


@dataclass
class AppliedEdit:
    """An artifact applied to a backbone, with the weights it replaced, the hooks that attach its modules and what
    undoes the entries it set (for ``remove_artifact``)."""

    artifact: Artifact
    originals: dict[str, torch.Tensor]
    hooks: dict[str, RemovableHandle] = field(default_factory=dict)
    undo: list[Callable[[], None]] = field(default_factory=list)
    backbone: Any = None  # what it was applied to (``Artifact.remove`` takes the handle alone)


def _base_matches(artifact: Artifact, linears: dict[str, nn.Linear], mismatched: list[str]) -> None:
    """Accept weights whose float32 hashes differ from the recorded ones (``mismatched``) only when the base is the
    same model loaded in another precision: every hashed weight equals the originals once both are rounded to a
    half precision whose digest the artifact records. Otherwise the first mismatch is a UserError."""
    if not mismatched:
        return
    names = {key: key.removesuffix(WEIGHT) for key in artifact.original_sha256}
    if all(name in linears for name in names.values()):
        weights = {key: linears[name].weight for key, name in names.items()}
        if matches_in_half_precision(artifact, weights) is not None:
            return
    base = artifact.base.get("source", artifact.base.get("family"))
    raise UserError(f"artifact was made for a different base model ({base}): weight {mismatched[0]} does not match")


def _check_base(identity: dict, base: dict) -> None:
    """The family the artifact was made for, and the text encoders it was fitted with (SD3 with or without T5: an
    edit of one text pathway leaves the other unedited) where its manifest records them."""
    if identity["family"] != base.get("family"):
        raise UserError(f"artifact was made for a {base.get('family')} model, not this {identity['family']} model")
    fitted, here = base.get("text_encoders"), identity.get("text_encoders")
    if fitted is not None and here is not None and fitted != here:
        raise UserError(
            f"artifact was fitted with text encoders {fitted}, this model has {here}: load the model as the edit "
            "was made (SD3: with or without --without-t5 as the edit was)"
        )


def _targets(backbone, artifact: Artifact) -> dict[str, nn.Linear]:
    """The module for every weight of the artifact, after checking family, names, shapes and hashes (compared in
    float32, or in a half precision for a base loaded in one: ``_base_matches``)."""
    _check_base(backbone.identity(), artifact.base)
    made_for = artifact.base.get("family")
    linears = editable_linears(backbone)
    base = artifact.base.get("source", made_for)
    targets, mismatched = {}, []
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
            mismatched.append(key)
        targets[key] = linears[name]
    _base_matches(artifact, linears, mismatched)
    return targets


def _wrapped(backbone, artifact: Artifact, attach: bool) -> dict[str, nn.Linear]:
    """The linear map for every added module of the artifact, after checking names, shapes and hashes (the weights
    a module-only edit leaves alone) and, when attaching, that no module is attached there already."""
    linears = editable_linears(backbone)
    base = artifact.base.get("source", artifact.base.get("family"))
    wrapped, mismatched = {}, []
    for name, module in artifact.modules.items():
        if name not in linears:
            raise UserError(f"artifact was made for a different base model ({base}): no module {name} here")
        linear, key = linears[name], name + WEIGHT
        if (linear.in_features, linear.out_features) != (module.d_in, module.d_out):
            raise UserError(
                f"artifact was made for a different base model ({base}): module {name} maps "
                f"{linear.in_features} -> {linear.out_features} here, {module.d_in} -> {module.d_out} in the artifact"
            )
        if key not in artifact.weights and tensor_sha256(linear.weight) != artifact.original_sha256.get(key):
            mismatched.append(key)
        if attach and (carried := getattr(linear, ATTACHED, None)):
            raise UserError(f"this edit is already applied (module {name} already carries a {carried})")
        wrapped[name] = linear
    _base_matches(artifact, linears, mismatched)
    return wrapped


def _attach(name: str, linear: nn.Linear, module: nn.Module) -> RemovableHandle:
    """Hook ``linear`` so that it returns W x + b + Δ(x). The module itself is attached: moved to the linear's
    device if needed, put in eval mode and frozen (no parameter gradients; gradients still flow to x); its kind
    says how Δ reads x, and Δ is cast to the output's dtype."""
    kind = kind_of(name, module)
    module.to(device=linear.weight.device).eval().requires_grad_(False)
    delta = kind.delta(linear, module)
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)

    def add_delta(_linear: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
        x = args[0] if args else kwargs["input"]
        x = x.to(dtype) if dtype is not None and x.is_floating_point() else x  # a half-precision base, a float32 Δ
        return output + delta(x).to(output.dtype)

    handle = linear.register_forward_hook(add_delta, with_kwargs=True)
    setattr(linear, ATTACHED, kind.label)  # a plain attribute, not a submodule: state_dict and names are unchanged
    return handle


def apply_artifact(backbone, artifact: Artifact, modules: bool = True) -> AppliedEdit:
    """Patch the backbone's weights in place and, if ``modules``, attach every added module to its linear map and
    set the artifact's entries on the backbone (``modules=False``, the module-removal attack, applies the weights
    only). Everything is checked before anything changes. The new weights are cast to each module's dtype and
    device; the originals are kept as they are, for ``remove_artifact``."""
    targets = _targets(backbone, artifact)
    wrapped = _wrapped(backbone, artifact, attach=modules)
    entries = artifact.entries if modules else {}
    undo = [ENTRY_KINDS[key].attach(backbone, value) for key, value in entries.items()]  # first: they may refuse
    originals = {key: module.weight.detach().clone() for key, module in targets.items()}
    with torch.no_grad():
        for key, module in targets.items():
            module.weight.data.copy_(artifact.weights[key])
    hooks = {name: _attach(name, linear, artifact.modules[name]) for name, linear in wrapped.items()} if modules else {}
    return AppliedEdit(artifact, originals, hooks, [u for u in undo if u is not None], backbone)


def remove_artifact(backbone, applied: AppliedEdit) -> None:
    """Undo the entries, detach the modules, put the replaced weights back in place (the exact tensors ``apply``
    kept) and check they hash to them."""
    linears = editable_linears(backbone)
    for undo in applied.undo:
        undo()
    for name, handle in applied.hooks.items():
        handle.remove()
        if hasattr(linears[name], ATTACHED):
            delattr(linears[name], ATTACHED)
    with torch.no_grad():
        for key, original in applied.originals.items():
            linears[key.removesuffix(WEIGHT)].weight.data.copy_(original)
    for key, original in applied.originals.items():
        if not torch.equal(linears[key.removesuffix(WEIGHT)].weight, original):
            raise RuntimeError(f"weight {key} does not match the original after removing the edit")


@contextmanager
def artifact_applied(backbone, artifact: Artifact | None, modules: bool = True) -> Iterator[AppliedEdit | None]:
    """``artifact`` applied to ``backbone`` inside the block, removed on the way out (None: the block runs on the
    model as it is)."""
    if artifact is None:
        yield None
        return
    applied = apply_artifact(backbone, artifact, modules=modules)
    try:
        yield applied
    finally:
        remove_artifact(backbone, applied)


def export_artifact(backbone, artifact: Artifact, out: Path, overwrite: bool = False) -> Path:
    """Write a full diffusers folder (``save_pretrained``) of the edited model, plus ``erasekit_edit.json``.

    The backbone is edited only while saving and is back to its base model afterwards.
    """
    if artifact.entries:
        label = ENTRY_KINDS[next(iter(artifact.entries))].label
        raise UserError(f"this edit carries a {label}, which a diffusers folder cannot hold; use it with --edit")
    if artifact.modules:
        labels = dict.fromkeys(kind_of(name, module).label for name, module in artifact.modules.items())
        raise UserError(
            f"this edit carries {' and '.join(labels)} modules ({len(artifact.modules)}), which a plain diffusers "
            "folder cannot hold; use it with --edit"
        )
    pipe = getattr(backbone, "pipe", None)
    if pipe is None:
        raise UserError("export writes a diffusers folder; ShapeWorld edits are used with --edit")
    out = Path(out)
    with artifact_applied(backbone, artifact), atomic_dir(out, overwrite) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        write_json(tmp / EXPORT_MANIFEST, manifest_of(artifact))
    return out


# --- the public API's targets: a Backbone or a diffusers pipeline object --------------------------------------

_APPLIED: dict[int, list[AppliedEdit]] = {}  # by id() of what the user applied an edit to, until it is removed


def as_backbone(target: Any) -> Backbone:
    """``target`` as a Backbone: itself, or the backbone ``erasekit.backbones.loader.load_backbone`` makes of a
    diffusers pipeline object (wrapped in place: the edit changes the user's pipeline).

    NOTE: the loader learns to wrap pipeline objects in a change of its own; a loader that cannot (it takes paths
    only) makes this a TypeError that asks for a Backbone. A text filter entry is set on the wrapper, so a pipeline's
    own ``__call__`` does not see it: weights and modules are what an edit changes in a pipeline."""
    if isinstance(target, Backbone):
        return target
    if isinstance(target, str | Path):
        raise TypeError(f"an edit is applied to a loaded model, not a path ({target}): load it with load_backbone")
    try:
        return load_backbone(target)
    except TypeError:
        raise TypeError(
            f"cannot apply an edit to a {type(target).__name__}: pass a Backbone (erasekit.backbones.loader)"
        ) from None


def apply_to(target: Any, artifact: Artifact, modules: bool = True) -> AppliedEdit:
    """``apply_artifact`` on a Backbone or a diffusers pipeline, remembered for ``remove_from(target)``."""
    applied = apply_artifact(as_backbone(target), artifact, modules=modules)
    _APPLIED.setdefault(id(target), []).append(applied)
    return applied


def remove_from(target: Any, artifact: Artifact) -> None:
    """Remove ``artifact`` from what it was applied to: ``target`` is the AppliedEdit ``apply_to`` returned, or the
    Backbone or pipeline it was applied to (its latest application there)."""
    applied = target if isinstance(target, AppliedEdit) else _latest(target, artifact)
    if applied.artifact is not artifact:
        raise UserError("that handle belongs to another edit: remove it with that edit")
    for key, handles in list(_APPLIED.items()):
        handles[:] = [h for h in handles if h is not applied]
        if not handles:
            del _APPLIED[key]
    remove_artifact(applied.backbone, applied)


def _latest(target: Any, artifact: Artifact) -> AppliedEdit:
    """The latest application of ``artifact`` to ``target`` that is not removed yet."""
    handles = _APPLIED.get(id(target), [])
    applied = next((h for h in reversed(handles) if h.artifact is artifact), None)
    if applied is None:
        raise UserError(f"this edit is not applied to this {type(target).__name__}")
    return applied

"""Edit artifacts: build / save / load / apply / remove / export (DESIGN.md, "Artifact").

``artifact.py`` holds the Artifact, ``manifest.py`` the manifest's schema, ``store.py`` saving and loading,
``apply.py`` applying, removing and exporting, and ``plugins.py`` the registry of what methods add to an edit
(module kinds and manifest entries), which the method packages fill when ``erasekit.methods`` is imported.
"""

from erasekit.artifacts.apply import AppliedEdit, apply_artifact, artifact_applied, export_artifact, remove_artifact
from erasekit.artifacts.artifact import Artifact, build_artifact, load_artifact
from erasekit.artifacts.manifest import FORMAT_VERSION, manifest_schema
from erasekit.artifacts.plugins import (
    MODULE_SEP,
    EntryKind,
    ModuleKind,
    register_entry_kind,
    register_module_kind,
)
from erasekit.artifacts.store import save_artifact
from erasekit.artifacts.tensors import editable_linears, tensor_sha256

__all__ = [
    "FORMAT_VERSION",
    "MODULE_SEP",
    "AppliedEdit",
    "Artifact",
    "EntryKind",
    "ModuleKind",
    "apply_artifact",
    "artifact_applied",
    "build_artifact",
    "editable_linears",
    "export_artifact",
    "load_artifact",
    "manifest_schema",
    "register_entry_kind",
    "register_module_kind",
    "remove_artifact",
    "save_artifact",
    "tensor_sha256",
]

"""Edit artifacts: save / load / apply / remove / export (see ``artifact.py``)."""

from erasekit.artifacts.artifact import (
    FORMAT_VERSION,
    MODULE_SEP,
    AppliedEdit,
    Artifact,
    apply_artifact,
    build_artifact,
    editable_linears,
    export_artifact,
    load_artifact,
    remove_artifact,
    save_artifact,
    tensor_sha256,
)

__all__ = [
    "FORMAT_VERSION",
    "MODULE_SEP",
    "AppliedEdit",
    "Artifact",
    "apply_artifact",
    "build_artifact",
    "editable_linears",
    "export_artifact",
    "load_artifact",
    "remove_artifact",
    "save_artifact",
    "tensor_sha256",
]

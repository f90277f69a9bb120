"""The tensors of an edit: which linear maps it may replace, how a weight is hashed, what the tensors file holds."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from erasekit.artifacts.plugins import ENTRY_KINDS, MODULE_SEP, entry_tensor, kind_of, module_tensor
from erasekit.errors import UserError

if TYPE_CHECKING:
    from erasekit.artifacts.artifact import Artifact

WEIGHT = ".weight"
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # the only dtypes an artifact holds


def editable_linears(backbone) -> dict[str, nn.Linear]:
    """Every linear map an edit may replace, by name: the text layers and the projectors."""
    return dict(backbone.text_layers()) | backbone.projectors()


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 over dtype, shape and the raw bytes of the tensor (any device, any layout)."""
    t = t.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def entry_values(artifact: Artifact) -> dict:
    """The value of every registered entry the artifact has, by manifest key in sorted order (the manifest's)."""
    values = {key: ENTRY_KINDS[key].value(artifact) for key in sorted(ENTRY_KINDS)}
    return {key: value for key, value in values.items() if value is not None}


def stored_tensors(artifact: Artifact) -> dict[str, torch.Tensor]:
    """Every tensor the tensors file holds, by key: the weights, the modules' own tensors, the entries' tensors."""
    tensors = dict(artifact.weights)
    for name, module in artifact.modules.items():
        own = kind_of(name, module).own_state(module)
        tensors |= {module_tensor(name, key): t for key, t in own.items()}
    for key, value in entry_values(artifact).items():
        tensors |= {entry_tensor(key, name): t for name, t in ENTRY_KINDS[key].tensors(value).items()}
    return tensors


def _map_name(key: str) -> str:
    """What a tensors-file key belongs to: the linear module, or the entry (by its label)."""
    owner, _, rest = key.partition(MODULE_SEP)
    if owner:
        return owner.removesuffix(WEIGHT)
    entry = ENTRY_KINDS.get(rest.partition(".")[0])
    return entry.label if entry else key


def refuse_non_finite(tensors: dict[str, torch.Tensor]) -> None:
    bad = sorted({_map_name(key) for key, t in tensors.items() if not bool(torch.isfinite(t.detach()).all())})
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        hint = "check the method's settings (--set)"
        raise UserError(f"the erasure produced non-finite weights (maps: {shown}); nothing was saved — {hint}")

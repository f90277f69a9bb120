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
HASH_DTYPE = torch.float32  # weights are hashed as float32 values, whatever the precision the model is loaded in
HASH_DTYPE_KEY = "hash_dtype"  # the manifest's base records the canonical dtype under this key
HALF_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
DIGEST_KEY = "original_sha256_{}"  # base key of the digest of the original weights rounded to a half precision


def editable_linears(backbone) -> dict[str, nn.Linear]:
    """Every linear map an edit may replace, by name: the text layers and the projectors."""
    return dict(backbone.text_layers()) | backbone.projectors()


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 over dtype, shape and the raw bytes of the tensor (any device, any layout); a floating-point tensor
    is hashed in the canonical dtype (float32), so a weight hashes alike loaded in float32, float16 or bfloat16
    where its values are the same (an artifact made before this hashed float32 CPU weights: the same form)."""
    t = t.detach()
    t = (t.to(HASH_DTYPE) if t.is_floating_point() else t).cpu().contiguous()
    digest = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def precision_digest(weights: dict[str, torch.Tensor], dtype: torch.dtype) -> str:
    """One SHA-256 over the weights (by key, sorted) rounded to ``dtype``: what a base loaded in that precision
    from the same weights holds."""
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(f"{key}={tensor_sha256(weights[key].detach().to(dtype))};".encode())
    return digest.hexdigest()


def precision_record(weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """What the manifest's base records about precision: the canonical hash dtype and, for each half precision,
    the digest of the original weights rounded to it (so the edit applies to a base loaded in that precision)."""
    record = {HASH_DTYPE_KEY: str(HASH_DTYPE).removeprefix("torch.")}
    return record | {DIGEST_KEY.format(name): precision_digest(weights, dtype) for name, dtype in HALF_DTYPES.items()}


def record_precisions(artifact: Artifact, backbone) -> Artifact:
    """Add ``precision_record`` of the backbone's current weights (the originals the artifact replaces or wraps) to
    ``artifact.base``; call it on the backbone the artifact was just made from."""
    linears = editable_linears(backbone)
    weights = {key: linears[key.removesuffix(WEIGHT)].weight for key in artifact.original_sha256}
    artifact.base.update(precision_record(weights))
    return artifact


def matches_in_half_precision(artifact: Artifact, weights: dict[str, torch.Tensor]) -> str | None:
    """The half precision (by name) in which ``weights`` (every weight the artifact hashed) equal its originals
    rounded alike, by the digests its base records; None when none does or none is recorded (older artifacts)."""
    for name, dtype in HALF_DTYPES.items():
        recorded = artifact.base.get(DIGEST_KEY.format(name))
        if isinstance(recorded, str) and precision_digest(weights, dtype) == recorded:
            return name
    return None


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

"""Which device and dtype a model runs on: ``resolve("auto" | "cpu" | "cuda" | "cuda:N" | "mps", "auto" | "float32" |
"float16" | "bfloat16")``.

``auto`` is CUDA in float16 (bfloat16 where the GPU supports it) when a GPU is present, else the CPU in float32. A
device that is not there is a one-line UserError, before any model loads. What the machine has is read through an
``Availability`` that tests replace, so the whole table is checked without a GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from erasekit.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_CUDA = re.compile(r"cuda(?::(\d+))?")


@dataclass(frozen=True)
class Availability:
    """What this machine offers: CUDA devices, bfloat16 on them, MPS."""

    cuda_devices: int = 0
    cuda_bf16: bool = False
    mps: bool = False


def available() -> Availability:
    """This machine's devices (torch's own queries)."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Availability(cuda, bool(cuda) and torch.cuda.is_bf16_supported(), mps)


def resolve_device(device: str | torch.device, have: Availability) -> torch.device:
    """The torch.device ``device`` names; UserError for a bad name or a device this machine lacks."""
    name = str(device).strip().lower()
    if isinstance(device, torch.device) and device.type == "cpu":
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda") if have.cuda_devices else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not have.mps:
            raise UserError("--device mps: no MPS device (Apple GPU) is available here; use --device cpu or auto")
        return torch.device("mps")
    if match := _CUDA.fullmatch(name):
        index = int(match.group(1) or 0)
        if have.cuda_devices == 0:
            raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
        if index >= have.cuda_devices:
            raise UserError(f"--device {name}: this machine has {have.cuda_devices} CUDA device(s) (cuda:0 ...)")
        return torch.device(name)
    raise UserError(f"--device {device!s}: choose one of {', '.join(DEVICES)}")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, have: Availability) -> torch.dtype:
    """The torch.dtype ``dtype`` names; ``auto`` is half precision on CUDA (bfloat16 where supported), else float32."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
        return dtype
    name = str(dtype).strip().lower()
    if name not in DTYPES:
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    chosen = DTYPES[name]
    if chosen is not None:
        return chosen
    if device.type == "cuda":
        return torch.bfloat16 if have.cuda_bf16 else torch.float16
    return torch.float32


def resolve(
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    have: Availability | None = None,
) -> tuple[torch.device, torch.dtype]:
    """(torch.device, torch.dtype) for the ``--device`` and ``--dtype`` values (None counts as ``auto``)."""
    have = available() if have is None else have
    chosen = resolve_device("auto" if device is None else device, have)
    return chosen, resolve_dtype("auto" if dtype is None else dtype, chosen, have)


def dtype_name(dtype: torch.dtype) -> str:
    """float32, float16, bfloat16, ... (torch.float32 without its prefix)."""
    return str(dtype).removeprefix("torch.")


def supports_float64(device: torch.device) -> bool:
    """Whether closed-form solves can run in float64 on ``device`` (CUDA and the CPU can; MPS cannot)."""
    return device.type != "mps"


def solve_device(device: torch.device) -> torch.device:
    """Where a float64 solve for weights on ``device`` runs: there when it supports float64, else the CPU."""
    return device if supports_float64(device) else torch.device("cpu")

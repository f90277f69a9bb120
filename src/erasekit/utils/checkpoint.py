"""Training checkpoints as safetensors (+ JSON for scalars), written atomically, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from erasekit.errors import UserError
from erasekit.utils.io import atomic_dir, json_text

CHECKPOINT_PREFIX = "step-"


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors = {
        f"{idx}.{key}": (value if torch.is_tensor(value) else torch.tensor(value)).contiguous()
        for idx, entry in state["state"].items()
        for key, value in entry.items()
    }
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    root: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    keep: int = 2,
) -> Path:
    target = Path(root) / f"{CHECKPOINT_PREFIX}{step:08d}"
    with atomic_dir(target, overwrite=True) as tmp:
        for name, module in modules.items():
            save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, tmp / f"{name}.safetensors")
        tensors, groups = flatten_optimizer(optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json_text({"step": step, "param_groups": groups, **meta}))
    for old in sorted(Path(root).glob(f"{CHECKPOINT_PREFIX}*"))[:-keep]:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    return target


def latest_checkpoint(root: Path) -> Path | None:
    found = sorted(p for p in Path(root).glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.json").exists())
    return found[-1] if found else None


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> dict:
    """Restore ``modules`` and ``optimizer`` from ``path``; a damaged checkpoint is a one-line UserError."""
    try:
        for name, module in modules.items():
            module.load_state_dict(load_file(path / f"{name}.safetensors"))
        state = json.loads((path / "state.json").read_text())
        restore_optimizer(optimizer, load_file(path / "optimizer.safetensors"), state["param_groups"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"damaged training checkpoint {path} ({reason}); remove it to resume from an earlier one"
        ) from None
    return state

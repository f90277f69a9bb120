"""Atomic writes: outputs go to a temporary sibling and are moved into place when complete."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp / mkdtemp create private (0600 / 0700) paths; what is moved into place gets the usual permissions
FILE_MODE, DIR_MODE = 0o666 & ~_umask(), 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block finishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(DIR_MODE)
    if target.exists():
        backup = target.with_name(f".{target.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        target.rename(backup)
        tmp.rename(target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        tmp.rename(target)


@contextlib.contextmanager
def atomic_file(target: Path, mode: str = "w") -> Iterator[Any]:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def strict_json(data: Any) -> Any:
    """``data`` with every non-finite float as None (null): what erasekit writes is strict JSON, never NaN or
    Infinity; numpy scalars and tuples become their JSON forms."""
    if isinstance(data, dict):
        return {str(k): strict_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(v) for v in data]
    if hasattr(data, "item") and getattr(data, "shape", None) == ():
        data = data.item()  # a numpy or torch scalar
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def json_text(data: Any, default=None, indent: int | None = 2) -> str:
    """Strict JSON text of ``data`` (see ``strict_json``), ending in a newline when indented."""
    text = json.dumps(strict_json(data), indent=indent, allow_nan=False, default=default)
    return text + "\n" if indent is not None else text


def write_json(path: Path, data: Any) -> None:
    with atomic_file(path) as handle:
        handle.write(json_text(data))


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a one-line UserError naming ``what`` when it is not one."""
    from erasekit.errors import UserError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"corrupted {what} ({exc}): {path}") from exc
    if not isinstance(data, dict):
        raise UserError(f"corrupted {what} (not a JSON object): {path}")
    return data

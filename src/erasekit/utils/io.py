"""Atomic writes: outputs go to a temporary sibling and are moved into place when complete."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import signal
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


PARTIAL = ".partial-"  # a temporary output folder is ".{name}.partial-{pid}-{random}"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _partial_prefix(target: Path) -> str:
    return f".{target.name}{PARTIAL}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_partials(target: Path) -> list[Path]:
    """Temporary folders that an interrupted earlier run writing ``target`` left behind (its process is gone)."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    prefix = _partial_prefix(target)
    stale = []
    for path in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            stale.append(path)
    return stale


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` only if the block finishes.

    ``target`` may exist only as an empty folder, unless ``overwrite``. Stale temporary folders of an earlier,
    interrupted run for the same target are removed first (and only those). SIGINT / SIGTERM are held off
    while the finished folder is moved into place, so an interrupted run leaves either nothing or everything.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_partials(target):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_partial_prefix(target)}{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(DIR_MODE)
        _move_into_place(tmp, target, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the move succeeded


def _move_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    from erasekit.errors import UserError

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        if target.is_symlink() or target.exists() and not is_empty_dir(target):
            if not overwrite:
                raise UserError(f"{target} exists and is not empty; give --overwrite to replace it")
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
            target.rename(backup / target.name)
            tmp.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            if target.exists():
                target.rmdir()
            tmp.rename(target)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


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


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(out: Path, overwrite: bool = False, inputs: tuple[Path | None, ...] = (), flag: str = "--out") -> None:
    """Refuse, before any work, an output that would destroy data or cannot be written: one that exists and is
    not empty (unless ``overwrite``), one that holds or is held by an input of the same command (always), the
    current folder or one above it, and one whose parent cannot be created or written."""
    from erasekit.errors import UserError

    out = Path(out)
    where = Path(os.path.abspath(out))
    if _contains(where, Path.cwd()):
        raise UserError(f"{flag} {out} is the current folder or one above it; name a new folder")
    for given in filter(None, inputs):
        if _contains(where, Path(os.path.abspath(given))) or _contains(Path(os.path.abspath(given)), where):
            raise UserError(f"{flag} {out} would overwrite this command's own input {given}")
        if out.exists() and given.exists() and os.path.samefile(out, given):
            raise UserError(f"{flag} {out} would overwrite this command's own input {given}")
    if (out.is_symlink() or out.exists()) and not is_empty_dir(out) and not overwrite:
        raise UserError(f"{flag} {out} exists and is not empty; give --overwrite to replace it")
    parent = where.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {out}: cannot create it, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: no permission to write in {parent}")

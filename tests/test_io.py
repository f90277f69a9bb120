"""Atomic writes (utils/io.py): all or nothing, with the permissions an ordinary write would give."""

import os
from pathlib import Path

import pytest

from erasekit.utils.io import DIR_MODE, FILE_MODE, atomic_dir, atomic_file


def test_atomic_file_replaces_the_target_only_when_complete(tmp_path: Path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_file(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == FILE_MODE  # not mkstemp's private 0600


def test_atomic_dir_gets_ordinary_permissions(tmp_path: Path):
    with atomic_dir(tmp_path / "edit") as folder:
        (folder / "a").write_text("x")
    assert (tmp_path / "edit" / "a").read_text() == "x"
    assert (tmp_path / "edit").stat().st_mode & 0o777 == DIR_MODE  # not mkdtemp's private 0700


def test_what_erasekit_writes_is_strict_json_with_null_for_non_finite_numbers(tmp_path: Path):
    import json

    import numpy as np

    from erasekit.utils.io import json_text, write_json

    data = {"asr": float("nan"), "loss": [float("inf"), np.float32(-np.inf), np.float64(0.5)], "k": (1, 2)}
    text = json_text(data)
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert strict == {"asr": None, "loss": [None, None, 0.5], "k": [1, 2]}
    write_json(tmp_path / "r.json", data)
    assert json.loads((tmp_path / "r.json").read_text()) == strict


def test_atomic_dir_refuses_to_replace_a_folder_that_is_not_empty_unless_told(tmp_path: Path):
    from erasekit.errors import UserError

    target = tmp_path / "out"
    target.mkdir()
    (target / "precious.txt").write_text("user data")
    with pytest.raises(UserError, match="--overwrite"), atomic_dir(target) as folder:
        (folder / "a").write_text("x")
    assert (target / "precious.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    with atomic_dir(target, overwrite=True) as folder:
        (folder / "a").write_text("x")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_fills_an_empty_folder_and_refuses_a_file(tmp_path: Path):
    from erasekit.errors import UserError

    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as folder:
        (folder / "a").write_text("x")
    assert (tmp_path / "empty" / "a").exists()
    (tmp_path / "file").write_text("keep")
    with pytest.raises(UserError), atomic_dir(tmp_path / "file") as folder:
        (folder / "a").write_text("x")
    assert (tmp_path / "file").read_text() == "keep"


def test_a_rerun_removes_the_stale_temporary_folder_of_its_own_target_and_only_that(tmp_path: Path):
    import subprocess
    import sys

    from erasekit.utils.io import stale_partials

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.partial-{pid}-abc"
    other_target = tmp_path / f".other.partial-{pid}-abc"
    alive = tmp_path / f".out.partial-{os.getpid()}-abc"  # a run still going: not ours to remove
    users = tmp_path / ".out.partial-notes"
    for folder in (stale, other_target, alive, users):
        folder.mkdir()
    assert stale_partials(tmp_path / "out") == [stale]
    with atomic_dir(tmp_path / "out") as folder:
        (folder / "a").write_text("x")
    assert not stale.exists() and other_target.exists() and alive.exists() and users.exists()


def test_check_output_refuses_what_would_lose_data_before_any_work(tmp_path: Path, monkeypatch):
    from erasekit.errors import UserError
    from erasekit.utils.io import check_output

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    cases = {
        "exists and is not empty": (tmp_path / "full", False, ()),
        "own input": (tmp_path / "full", True, (tmp_path / "full",)),
        "own input ": (tmp_path / "full", True, (tmp_path / "full" / "x",)),
        "own input  ": (tmp_path / "full" / "x", True, (tmp_path / "full",)),
        "current folder": (Path("."), True, ()),
        "current folder ": (tmp_path, True, ()),
        "is a file": (tmp_path / "a_file" / "out", False, ()),
    }
    for fragment, (out, overwrite, inputs) in cases.items():
        with pytest.raises(UserError, match=fragment.strip()):
            check_output(out, overwrite, inputs)
    check_output(tmp_path / "full", overwrite=True)
    check_output(tmp_path / "new" / "deeper")
    check_output(tmp_path / "empty" / "sub")


def test_check_output_refuses_a_folder_it_cannot_write(tmp_path: Path):
    from erasekit.errors import UserError
    from erasekit.utils.io import check_output

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(UserError, match="no permission"):
            check_output(locked / "out")
    finally:
        locked.chmod(0o700)

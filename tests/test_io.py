"""Atomic writes (utils/io.py): all or nothing, with the permissions an ordinary write would give."""

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

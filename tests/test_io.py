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

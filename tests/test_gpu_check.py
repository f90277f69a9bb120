"""benchmarks/gpu_check.py's smoke test: the whole script on a tiny random pipeline on the CPU, in seconds."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

# about 7 s alone on 2 cores, 25 s beside a busy process
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_gpu_check_runs_end_to_end_at_tiny_size(tmp_path: Path):
    record = gpu_check.main(
        ["--size", "tiny", "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(tmp_path)]
    )
    results = record["results"]
    assert results["generation"]["images_per_second"] > 0
    assert {(e["method"], e["concepts"]) for e in results["edits"]} == {("uce", 1), ("erasepro", 1), ("etc", 6)}
    assert [s["stage"] for s in results["edits"][-1]["stages"]][0] == "encoding"
    assert set(results["applied"]) == {"uce", "etc"}
    assert "Not a GPU measurement" in (tmp_path / "gpu_check.md").read_text()
    assert json.loads((tmp_path / "gpu_check.json").read_text())["size"] == "tiny"
    assert not (tmp_path / "work" / "gpu_check.md").exists()

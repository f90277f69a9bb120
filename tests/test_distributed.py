"""utils/distributed.py: batch sharding and in-order gathering; under ``accelerate launch`` with two CPU processes,
``erasekit evaluate`` and ETC's embedding extraction give exactly what one process gives."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from erasekit.utils import distributed
from erasekit.utils.distributed import batch_slices, interleave, map_batches, shard_batches

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def _simulate(n_items: int, batch_size: int, size: int) -> list[list[int]]:
    """Each simulated rank runs its shard (here: lists the items of its batches); interleave reassembles."""
    per_rank = [
        [list(range(n_items))[part] for part in shard_batches(n_items, batch_size, rank, size)] for rank in range(size)
    ]
    return interleave(per_rank, len(batch_slices(n_items, batch_size)))


@pytest.mark.parametrize(("n_items", "batch_size"), [(0, 4), (1, 4), (10, 3), (12, 4), (130, 64)])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_cover_the_single_process_batches_in_order(n_items: int, batch_size: int, size: int) -> None:
    single = [list(range(n_items))[part] for part in batch_slices(n_items, batch_size)]
    assert _simulate(n_items, batch_size, size) == single  # the same batch boundaries, in the original order
    shards = [shard_batches(n_items, batch_size, rank, size) for rank in range(size)]
    assert sorted(p.start for s in shards for p in s) == [p.start for p in batch_slices(n_items, batch_size)]
    assert all(len(s) <= -(-len(single) // size) for s in shards)  # balanced: at most ceil(batches / size) each


def test_interleave_refuses_a_wrong_number_of_batches() -> None:
    with pytest.raises(RuntimeError, match="expected"):
        interleave([[0, 2], [1]], 4)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        batch_slices(3, 0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, False), ({"WORLD_SIZE": "1", "ACCELERATE_USE_CPU": "True"}, False), ({"WORLD_SIZE": "2"}, True)]
    + [({"OMPI_COMM_WORLD_SIZE": "4"}, True), ({"WORLD_SIZE": "x"}, False)],
)
def test_launched_reads_the_world_size(monkeypatch: pytest.MonkeyPatch, env: dict, expected: bool) -> None:
    for name in distributed.WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.launched() is expected


def test_a_plain_process_initialises_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in distributed.WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # `accelerate launch --cpu` of one process
    distributed._state.cache_clear()
    try:
        assert distributed.world() == (0, 1) and distributed.is_main()
        distributed.barrier()
        assert distributed.all_gather({"a": 1}) == [{"a": 1}]
        seen = []
        assert map_batches(lambda part: seen.append(part) or part.start, 10, 4, desc="x") == [0, 4, 8]
        assert seen == batch_slices(10, 4)
        assert not torch.distributed.is_initialized()
    finally:
        distributed._state.cache_clear()


# --- two CPU processes under accelerate launch --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed.WORLD_SIZE_VARIABLES}
    return env | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _launch(*args: str, processes: int = 2) -> list[str]:
    """`accelerate launch` of ``processes`` CPU processes with every setting given (no accelerate config file).
    On a CPU-only machine it takes --multi_gpu (torchrun): --cpu alone starts ONE process unless under mpirun."""
    flags = ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no"]
    flags += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    return [str(VENV_BIN / "accelerate"), "launch", *flags, *args]


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _small_prompts(path: Path, rows: int = 16) -> None:
    """Every 15th row of the instance task: targets and preserve rows of all five groups."""
    with (ROOT / "benchmarks/tasks/instance.csv").open(newline="") as handle:
        lines = list(csv.reader(handle))
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([lines[0], *lines[1::15][:rows]])


def _without_timings(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "timings"}


@pytest.mark.slow
def test_evaluate_on_two_processes_equals_one(tmp_path: Path) -> None:
    """16 prompts x 8 images = 128 images = two batches of 64: one per process."""
    prompts = tmp_path / "prompts.csv"
    _small_prompts(prompts)
    args = ["evaluate", "--prompts", str(prompts), "--steps", "5", "--num-images", "8"]
    _run([sys.executable, "-m", "erasekit.cli", *args, "--out", str(tmp_path / "one")], tmp_path)
    _run(_launch("-m", "erasekit.cli", *args, "--out", str(tmp_path / "two")), tmp_path)
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two"))
    assert _without_timings(one) == _without_timings(two)
    assert sum(g["images"] for g in one["groups"].values()) == 128  # overall leaves paraphrased rows out
    names = sorted(p.name for p in (tmp_path / "one/images").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two/images").iterdir()) and len(names) == 128
    for name in names:
        assert (tmp_path / "one/images" / name).read_bytes() == (tmp_path / "two/images" / name).read_bytes(), name
    assert not list(tmp_path.glob(".two.*"))  # one writer: no second process's half-written folder


EMBEDDINGS_SCRIPT = """
import sys
from pathlib import Path

from safetensors.torch import save_file

from erasekit.backbones.shapeworld import ShapeWorldBackbone
from erasekit.concepts.embeddings import concept_embeddings
from erasekit.utils.distributed import world

out = Path(sys.argv[1])
rank, size = world()
assert size == 2, size
found = concept_embeddings(ShapeWorldBackbone.load(), sys.argv[2:], cache=out / "cache", progress=False)
save_file({str(i): x.contiguous() for i, x in enumerate(found)}, str(out / f"rank{rank}.safetensors"))
"""


@pytest.mark.slow
def test_concept_embeddings_on_two_processes_equal_one(tmp_path: Path) -> None:
    """3 phrases x 120 templates = 360 prompts = encode batches of 256 and 104: one per process."""
    from safetensors.torch import load_file

    from erasekit.backbones.shapeworld import ShapeWorldBackbone
    from erasekit.concepts.embeddings import concept_embeddings

    phrases = ["star", "red heart", "striped blue circle"]
    script = tmp_path / "embed.py"
    script.write_text(EMBEDDINGS_SCRIPT)
    _run(_launch(str(script), str(tmp_path), *phrases), tmp_path)
    single = concept_embeddings(ShapeWorldBackbone.load(), phrases, progress=False)
    for rank in range(2):  # every process holds every phrase's samples
        found = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert len(found) == len(phrases)
        for i, x in enumerate(single):
            assert torch.equal(found[str(i)], x)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == len(phrases)
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary files left by a second writer


DEVICE_SCRIPT = """
import json
import sys
from pathlib import Path

from erasekit.backbones.loader import load_backbone
from erasekit.utils.distributed import process_device, world

rank, size = world()
backbone = load_backbone("shapeworld", "auto", "auto")
record = {"rank": rank, "size": size, "process": str(process_device()), "device": str(backbone.device)}
record["dtype"] = str(backbone.dtype)
Path(sys.argv[1], f"device{rank}.json").write_text(json.dumps(record))
"""


@pytest.mark.slow
def test_each_process_reports_the_device_it_used(tmp_path: Path) -> None:
    """--device auto under accelerate launch is each process's own device (the CPU here, its GPU on a GPU machine)."""
    script = tmp_path / "device.py"
    script.write_text(DEVICE_SCRIPT)
    _run(_launch(str(script), str(tmp_path)), tmp_path)
    records = [json.loads((tmp_path / f"device{rank}.json").read_text()) for rank in range(2)]
    assert [r["rank"] for r in records] == [0, 1] and all(r["size"] == 2 for r in records)
    for record in records:
        assert record["device"] == record["process"] or record["device"] == record["process"] + ":0"
        expected = ("torch.float32",) if record["device"] == "cpu" else ("torch.float16", "torch.bfloat16")
        assert record["dtype"] in expected

"""Scale-out under ``accelerate launch``: whole batches shard across processes and are gathered back in order.

A process started by ``accelerate launch`` (or torchrun / mpirun) with more than one process in the world builds
an ``accelerate.PartialState`` the first time it asks: gloo on CPUs, NCCL on GPUs. A plain process never imports
accelerate for this and never initialises a process group: ``world()`` is (0, 1) and every helper is a no-op.

Process ``rank`` of ``size`` runs the batches ``i`` with ``i % size == rank`` of the batching ONE process would
use, so every batch holds the same items as in a single process and gives the same numbers bit for bit;
``gather_batches`` puts all batches' results back in the original order on every process.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

T = TypeVar("T")

# what accelerate launch / torchrun, Intel MPI and Open MPI / MVAPICH set to the number of processes
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched() -> bool:
    """True in a process started as one of several (``accelerate launch --num_processes N``, N > 1)."""
    for name in WORLD_SIZE_VARIABLES:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


@functools.cache
def _state() -> Any:
    """The shared ``accelerate.PartialState`` of a launched process; None in a plain one."""
    if not launched():
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    atexit.register(state.destroy_process_group)
    return state


def world() -> tuple[int, int]:
    """(rank, size): this process's index and the number of processes (0, 1 in a plain process)."""
    state = _state()
    return (state.process_index, state.num_processes) if state is not None else (0, 1)


def process_device() -> torch.device | None:
    """This process's own device under ``accelerate launch`` (``PartialState().device``: its GPU, or the CPU); None
    in a plain process, where ``--device auto`` decides."""
    state = _state()
    if state is None:
        return None
    device = torch.device(state.device)
    return torch.device("cpu") if device.type == "cpu" else device  # accelerate says cpu:0 on a CPU


def is_main() -> bool:
    """The process that writes outputs, caches and prints (the only one in a plain process)."""
    return world()[0] == 0


def barrier() -> None:
    """Wait until every process gets here (nothing in a plain process)."""
    if world()[1] > 1:
        torch.distributed.barrier()


def all_gather(obj: T) -> list[T]:
    """Every process's ``obj`` (picklable: arrays, tensors, lists), indexed by rank, on every process."""
    _, size = world()
    if size == 1:
        return [obj]
    gathered: list[Any] = [None] * size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def batch_slices(n_items: int, batch_size: int) -> list[slice]:
    """The batches one process uses: consecutive slices of ``batch_size`` items (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    return [slice(start, min(start + batch_size, n_items)) for start in range(0, n_items, batch_size)]


def shard_batches(n_items: int, batch_size: int, rank: int | None = None, size: int | None = None) -> list[slice]:
    """This process's batches: batch ``i`` of ``batch_slices`` for every ``i`` with ``i % size == rank``."""
    if rank is None or size is None:
        rank, size = world()
    return batch_slices(n_items, batch_size)[rank::size]


def interleave(per_rank: list[list[T]], n_batches: int) -> list[T]:
    """All batches' results in order from each rank's results for its ``shard_batches``."""
    size = len(per_rank)
    counts = [len(results) for results in per_rank]
    expected = [len(range(rank, n_batches, size)) for rank in range(size)]
    if counts != expected:
        raise RuntimeError(f"processes returned {counts} batches; expected {expected} for {n_batches} batches")
    return [per_rank[i % size][i // size] for i in range(n_batches)]


def gather_batches(local: list[T], n_items: int, batch_size: int) -> list[T]:
    """Results of every batch of ``batch_slices(n_items, batch_size)`` in order, on every process, from this
    process's results for its ``shard_batches`` (in a plain process: ``local`` itself)."""
    if world()[1] == 1:
        return local
    return interleave(all_gather(local), len(batch_slices(n_items, batch_size)))


def map_batches(
    fn: Callable[[slice], T], n_items: int, batch_size: int, desc: str | None = None, unit: str = "batch"
) -> list[T]:
    """``fn`` on this process's batches; every batch's result, in order, on every process. With ``desc``, a
    progress bar on the main process (when there are at least two batches)."""
    total = len(batch_slices(n_items, batch_size))
    mine = shard_batches(n_items, batch_size)
    bar = tqdm(mine, desc=desc, unit=unit, disable=desc is None or total < 2 or not is_main())
    return gather_batches([fn(part) for part in bar], n_items, batch_size)

"""Wall time and peak memory of a block of work (edit-time comparisons, per-stage summaries)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import torch


@dataclass
class Usage:
    seconds: float = 0.0
    peak_mib: float = 0.0  # peak resident memory above the level at the start (CPU) or peak CUDA memory


@contextmanager
def measure(interval: float = 0.005) -> Iterator[Usage]:
    """Time the block and sample its peak memory (RSS growth on CPU; allocator peak on CUDA)."""
    usage = Usage()
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], process.memory_info().rss)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield usage
    finally:
        usage.seconds = time.perf_counter() - start
        done.set()
        thread.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        usage.peak_mib = (peak[0] - base) / 2**20
        if torch.cuda.is_available():
            usage.peak_mib = torch.cuda.max_memory_allocated() / 2**20

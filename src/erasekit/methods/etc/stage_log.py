"""Per-stage wall time and peak memory of an ETC erase, in the order the stages ran (the summary's "stages")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from erasekit.utils.profiling import measure


class StageLog:
    """Per-stage wall time and peak memory, in the order the stages ran."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    @contextmanager
    def stage(self, name: str, **detail) -> Iterator[dict]:
        """Time a stage; a stage entered again (once per chunk) adds its seconds and keeps its highest peak."""
        with measure() as usage:
            yield detail
        row = next((r for r in self.rows if r["stage"] == name), None)
        if row is None:
            self.rows.append({"stage": name, "seconds": usage.seconds, "peak_mib": usage.peak_mib, **detail})
        else:
            row.update(seconds=row["seconds"] + usage.seconds, peak_mib=max(row["peak_mib"], usage.peak_mib), **detail)

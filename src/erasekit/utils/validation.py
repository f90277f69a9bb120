"""Numeric settings checked where they are declared: every number finite, each in its range (one-line errors).

A config dataclass declares ``RANGES = {field: Range(...)}`` and calls ``check_numbers(self)`` in
``__post_init__``, so the Python API is protected as well as the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from numbers import Real

from erasekit.errors import UserError


@dataclass(frozen=True)
class Range:
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1, low_open=True, high_open=True)  # (0, 1)
SHARE = Range(0, 1)  # [0, 1]
SEED = Range(0, 2**63 - 1)  # what every generator takes without wrapping


def _numbers(value) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, Real):
        return [value]
    if isinstance(value, tuple | list):
        return [v for item in value for v in _numbers(item)]
    return []


def check_numbers(config, what: str | None = None) -> None:
    """Every number in ``config``'s fields finite, and in ``config.RANGES[field]`` where one is declared."""
    what = what or type(config).__name__
    ranges: dict[str, Range] = getattr(config, "RANGES", {})
    for f in fields(config):
        for number in _numbers(getattr(config, f.name)):
            if not math.isfinite(number):
                raise UserError(f"{what} {f.name} must be a finite number, got {number}")
            if f.name in ranges and not ranges[f.name].holds(number):
                raise UserError(f"{what} {f.name} must be in {ranges[f.name]}, got {number}")

"""Attack budgets from ``KEY=VALUE`` options, checked before any work: every value is parsed to its key's type
and must lie in its key's allowed range; each refusal is a one-line UserError naming the attack, the key and
the range."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

from erasekit.errors import UserError

SHOWN = 40  # characters of a refused value quoted in its error


@dataclass(frozen=True)
class Limit:
    """The values a budget key allows: integers in [low, high], or finite floats in (low, high]."""

    kind: type  # int or float
    low: float
    high: float

    def parse(self, value) -> int | float:
        """``value`` (a string or a number) as ``kind``; ValueError when it is none (3.5 is no integer)."""
        if isinstance(value, str):
            return self.kind(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.kind is int else numbers.Real):
            raise ValueError(value)
        return self.kind(value)

    def allows(self, value: int | float) -> bool:
        if self.kind is int:
            return self.low <= value <= self.high
        return math.isfinite(value) and self.low < value <= self.high

    def describe(self) -> str:
        if self.kind is int:
            return f"an integer from {self.low} to {self.high}"
        if self.high == math.inf:
            return f"a finite number > {self.low:g}"
        return f"a number in ({self.low:g}, {self.high:g}]"


LIMITS = {  # every key of every attack's Budget
    "prompts": Limit(int, 1, 100_000),
    "tokens": Limit(int, 1, 8),  # learned or searched tokens in one prompt (the encoder reads 40)
    "steps": Limit(int, 1, 100_000),
    "lr": Limit(float, 0, math.inf),  # a huge one may still diverge: the attack then reports itself failed
    "batch": Limit(int, 1, 4096),
    "images": Limit(int, 1, 10_000),
    "concepts": Limit(int, 1, 10_000),
    "population": Limit(int, 3, 10_000),  # two elite parents and at least one child per generation
    "generations": Limit(int, 1, 10_000),
    "eta": Limit(float, 0, 100),
    "pool": Limit(int, 1, 100_000),
}


def quoted(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def checked_value(attack: str, key: str, value) -> int | float:
    """``value`` parsed and range-checked for ``key``; a one-line UserError otherwise."""
    limit = LIMITS[key]
    try:
        parsed = limit.parse(value)
    except (ValueError, TypeError, OverflowError):
        parsed = None
    if parsed is None or not limit.allows(parsed):
        raise UserError(f"budget {key}={quoted(value)} for the {attack} attack: {key} must be {limit.describe()}")
    return parsed


def parse_budget(attack: str, budget_class: type, options: dict | None):
    """``budget_class`` with ``options`` (strings or numbers) applied, every one checked; UserError otherwise."""
    known = [f.name for f in fields(budget_class)]
    values = {}
    for key, value in (options or {}).items():
        if key not in known:
            raise UserError(f"unknown budget {quoted(key)} for the {attack} attack; known: {', '.join(known)}")
        values[key] = checked_value(attack, key, value)
    return budget_class(**values)

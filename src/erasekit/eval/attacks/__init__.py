"""Attacks on an erasure (specs/evaluation.md, "Attacks"), one module each, registered by name.

``run_attack(name, context, budget)`` runs one attack with its budget (a dataclass of steps, prompts, ...,
overridable by ``key=value`` options) and returns an ``AttackOutcome`` with its ASR, budget and wall time.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields

from erasekit.errors import UserError
from erasekit.eval.attacks import inversion, module_removal, paraphrase, ring_a_bell, soft_prompt
from erasekit.eval.attacks.base import AttackContext, AttackOutcome

ATTACKS = {
    "module-removal": module_removal,
    "paraphrase": paraphrase,
    "ring-a-bell": ring_a_bell,
    "soft-prompt": soft_prompt,
    "inversion": inversion,
}


def budget_for(name: str, options: dict | None = None):
    """The attack's budget dataclass with ``options`` (strings or values) applied; UserError for unknown keys."""
    if name not in ATTACKS:
        raise UserError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    budget_class = ATTACKS[name].Budget
    types = {f.name: f.type for f in fields(budget_class)}
    values = {}
    for key, value in (options or {}).items():
        if key not in types:
            known = ", ".join(types) or "none"
            raise UserError(f"unknown budget {key!r} for the {name} attack; known: {known}")
        try:
            values[key] = (float if "float" in str(types[key]) else int)(value)
        except ValueError:
            raise UserError(f"budget {key}={value!r} for the {name} attack is not a number") from None
        if values[key] <= 0:
            raise UserError(f"budget {key}={value!r} for the {name} attack must be positive")
    return budget_class(**values)


def run_attack(name: str, context: AttackContext, options: dict | None = None) -> AttackOutcome:
    budget = budget_for(name, options)
    t0 = time.time()
    outcome = ATTACKS[name].run(context, budget)
    outcome.attack, outcome.budget, outcome.seconds = name, asdict(budget), time.time() - t0
    return outcome


__all__ = ["ATTACKS", "AttackContext", "AttackOutcome", "budget_for", "run_attack"]

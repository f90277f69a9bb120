"""Attacks on an erasure (specs/evaluation.md, "Attacks"), one module each, registered by name.

``run_attack(name, context, budget)`` runs one attack with its budget (a dataclass of steps, prompts, ...,
overridable by ``key=value`` options, each checked before any work) and returns an ``AttackOutcome`` with its
status, ASR, budget and wall time: an attack that failed to run has status "failed", a reason and no ASR.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from erasekit.errors import UserError
from erasekit.eval.attacks import inversion, module_removal, paraphrase, ring_a_bell, soft_prompt
from erasekit.eval.attacks.base import FAILED, NOT_APPLICABLE, OK, AttackContext, AttackFailed, AttackOutcome
from erasekit.eval.attacks.budgets import LIMITS, parse_budget

ATTACKS = {
    "module-removal": module_removal,
    "paraphrase": paraphrase,
    "ring-a-bell": ring_a_bell,
    "soft-prompt": soft_prompt,
    "inversion": inversion,
}


def budget_for(name: str, options: dict | None = None):
    """The attack's budget dataclass with ``options`` (strings or values) applied, each parsed and checked
    against its allowed range (attacks/budgets.py); a one-line UserError otherwise."""
    if name not in ATTACKS:
        raise UserError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return parse_budget(name, ATTACKS[name].Budget, options)


def run_attack(name: str, context: AttackContext, options: dict | None = None) -> AttackOutcome:
    """Run one attack; one that cannot reach a judgeable result is reported failed (with its reason), no ASR."""
    budget = budget_for(name, options)
    t0 = time.time()
    try:
        outcome = ATTACKS[name].run(context, budget)
    except AttackFailed as failure:
        outcome = AttackOutcome.failed(str(failure))
    outcome.attack, outcome.budget, outcome.seconds = name, asdict(budget), time.time() - t0
    return outcome


__all__ = [
    "ATTACKS",
    "FAILED",
    "LIMITS",
    "NOT_APPLICABLE",
    "OK",
    "AttackContext",
    "AttackOutcome",
    "budget_for",
    "run_attack",
]

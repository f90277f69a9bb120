"""ETC end to end (specs/etc.md): concept distributions -> targets and boundary anchors -> affine transport
to merged mapping triplets -> the eraser (keyed memory or trained MoEraser) on token vectors -> NIR. Registered as
``etc``.

The concept set's ``targets`` are the concepts to erase and its ``preserve`` list is the mapping pool
(§3: same domain, disjoint from the targets; its samples are also preserved). The stages live in their own modules:
config.py (settings, checks, work-folder keys), tokens.py (contexts, encoding, token vectors), fit.py (§1-§3),
memory.py (the keyed memory), erasers.py (§4-§5), checks.py (fit checks), summary.py (the CLI's rows).
"""

from __future__ import annotations

from torch import Tensor, nn

from erasekit.backbones.base import Backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.methods.base import EraseResult, register
from erasekit.methods.etc.checks import fit_quality, heldout_decisions, restore_error
from erasekit.methods.etc.config import ERASE, TOKEN_FIELDS, ETCConfig, check_concepts, stage_folder
from erasekit.methods.etc.erasers import (
    Eraser,
    corrupt_and_restore,
    erase_loss,
    fit_erasers,
    keyed_erasers,
    make_erasers,
    wrapped_projectors,
)
from erasekit.methods.etc.fit import cached_tokens
from erasekit.methods.etc.memory import build_memory
from erasekit.methods.etc.stage_log import StageLog
from erasekit.methods.etc.summary import describe
from erasekit.methods.etc.tokens import TokenConcepts, TokenData, check_contexts, concept_contexts, fitted_prompts

# what code outside the package imports from here (benchmarks/etc_token_fit.py, tests/test_validation.py)
__all__ = [
    "TOKEN_FIELDS",
    "ETCConfig",
    "StageLog",
    "TokenConcepts",
    "build_memory",
    "cached_tokens",
    "concept_contexts",
    "erase",
    "erase_loss",
    "fit_erasers",
    "fit_quality",
    "keyed_erasers",
    "make_erasers",
    "wrapped_projectors",
]


@register(
    "etc",
    ETCConfig,
    "ETC: tMM concept distributions, affine transport, MoEraser, noise injection-restore",
    fitted=fitted_prompts,
    describe=describe,
    label="ETC",
)
def erase(backbone: Backbone, concepts: ConceptSet, config: ETCConfig) -> EraseResult:
    check_concepts(concepts, config)
    check_contexts(backbone, concepts, config)
    log = StageLog()
    data = cached_tokens(backbone, concepts, config, log)
    projectors = wrapped_projectors(backbone, config)
    summary = {"targets": len(concepts.targets), "pool": len(concepts.preserve), "distributions": data.distributions}
    if config.eraser == "keyed":
        erasers, fitted = keyed_stage(projectors, data, config, log)
    else:
        erasers, fitted = moe_stage(projectors, data, concepts, config, log)
    summary |= fitted
    with log.stage("checks"):
        fit = fit_quality(projectors, erasers, data, config)
    if config.eraser == "keyed":  # its centres come from the real tokens: the tMM's core samples are not its goal
        fit.pop("erase_error")
    summary |= fit
    weights: dict[str, Tensor] = {}
    if config.nir:
        with log.stage("nir"):
            weights, students = corrupt_and_restore(projectors, erasers, config)
            summary["restore_error"] = restore_error(projectors, students, erasers, weights, data)
            erasers = students
    summary["seconds_by_stage"] = {row["stage"]: row["seconds"] for row in log.rows}
    return EraseResult(weights, log.rows, summary, modules=erasers)


def keyed_stage(
    projectors: dict[str, nn.Linear], data: TokenData, config: ETCConfig, log: StageLog
) -> tuple[dict[str, Eraser], dict]:
    """The keyed erasers over one memory (memory.py), and its summary: keys, θ, preserved keys, held-out decisions."""
    with log.stage("memory"):
        memory = build_memory(data, config)
        erasers = keyed_erasers(projectors, memory)
    summary = {"keys": data.centres.shape[0] * data.centres.shape[1], "threshold": float(memory.threshold)}
    return erasers, summary | {"preserved_keys": memory.preserved.shape[0]} | heldout_decisions(memory, data)


def moe_stage(
    projectors: dict[str, nn.Linear], data: TokenData, concepts: ConceptSet, config: ETCConfig, log: StageLog
) -> tuple[dict[str, Eraser], dict]:
    """The MoEraser trained on the token vectors (§4), resuming from the erase stage's work folder, and its last
    loss."""
    erasers = make_erasers(projectors, config)
    with log.stage("training", steps=config.steps):
        losses = fit_erasers(
            erasers,
            erase_loss(projectors, erasers, data, config),
            config.steps,
            config,
            stage_folder(concepts, config, ERASE),
            "MoEraser",
        )
    return erasers, {"erase_loss": losses[-1] if losses else None}

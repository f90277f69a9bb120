"""The method registry (DESIGN.md, "Method"): a config dataclass and ``erase(backbone, concepts, config)``
per method, registered by name; the CLI and the benchmark discover methods here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from erasekit.backbones.base import Backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.editing.closed_form import Solve, Transform
from erasekit.errors import UserError


@dataclass
class EraseResult:
    weights: dict[str, torch.Tensor]  # linear module name -> its new weight
    stages: list[dict] = field(default_factory=list)  # one row per edit stage (residuals, norms, sizes)
    summary: dict = field(default_factory=dict)
    modules: dict[str, nn.Module] = field(default_factory=dict)  # projector name -> module added to its output
    prompt_filter: dict | None = None  # a text-level plug-in (methods/prompt_filter.py), JSON form


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    erase: Callable[[Backbone, ConceptSet, object], EraseResult]
    description: str


METHODS: dict[str, Method] = {}


def register(name: str, config_class: type, description: str):
    def wrap(fn):
        METHODS[name] = Method(name, config_class, fn, description)
        return fn

    return wrap


def get_method(name: str) -> Method:
    import erasekit.methods  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def erase_to_artifact(backbone: Backbone, concepts: ConceptSet, method: str, options: dict | None = None):
    """Run a registered method with its config built from ``options``; the artifact's metrics carry the
    method's summary, its stages, the edit seconds and peak memory."""
    from dataclasses import asdict, fields

    from erasekit.artifacts import build_artifact
    from erasekit.utils.profiling import measure

    chosen = get_method(method)
    known = {f.name for f in fields(chosen.config_class)}
    if unknown := sorted(set(options or {}) - known):
        raise UserError(f"unknown {method} option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    config = chosen.config_class(**(options or {}))
    with measure() as usage:
        result = chosen.erase(backbone, concepts, config)
    summary = {**result.summary, "seconds": usage.seconds, "peak_mib": usage.peak_mib, "stages": result.stages}
    return build_artifact(
        backbone,
        method,
        asdict(config),
        concepts.to_json(),
        result.weights,
        summary,
        modules=result.modules,
        prompt_filter=result.prompt_filter,
    )


def stage_row(stage: str, names: list[str], gap: float, solves: list[Solve]) -> dict:
    """A stage's report: the gap it saw, the worst residual it left, the mean relative change."""
    return {
        "stage": stage,
        "maps": len(names),
        "first": names[0],
        "gap": gap,  # ||Y - X||_F / ||Y||_F before the edit
        "residual": max(s.residual for s in solves),
        "delta": sum(s.delta for s in solves) / len(solves),  # mean ||dW||_F / ||W||_F
        "constraints": solves[0].constraints,
        "rank": solves[0].rank,
        "d_in": int(solves[0].weight.shape[1]),
        "least_squares": solves[0].least_squares,
    }


def relative_gap(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(y - x) / torch.linalg.matrix_norm(y).clamp_min(1e-300))


def edit_maps(stage: str, maps: dict[str, nn.Linear], transform: Transform) -> tuple[dict[str, torch.Tensor], dict]:
    """Apply one fitted transform to every map that reads the same features (W = W0 T)."""
    solves = {name: transform.apply(m.weight.detach()) for name, m in maps.items()}
    row = stage_row(stage, list(maps), relative_gap(transform.x, transform.y), list(solves.values()))
    return {name: s.weight for name, s in solves.items()}, row

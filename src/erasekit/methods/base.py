"""The method registry (DESIGN.md, "Method"): a config dataclass and ``erase(backbone, concepts, config)``
per method, registered by name; the CLI and the benchmark discover methods here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from erasekit.artifacts import Artifact, build_artifact
from erasekit.artifacts.tensors import record_precisions
from erasekit.backbones.base import Backbone
from erasekit.concepts.contexts import check_disjoint
from erasekit.concepts.pairs import ConceptSet
from erasekit.editing.closed_form import Solve, Transform
from erasekit.errors import UserError
from erasekit.utils.profiling import measure


@dataclass
class EraseResult:
    weights: dict[str, torch.Tensor]  # linear module name -> its new weight
    stages: list[dict] = field(default_factory=list)  # one row per edit stage (residuals, norms, sizes)
    summary: dict = field(default_factory=dict)
    modules: dict[str, nn.Module] = field(default_factory=dict)  # projector name -> module added to its output
    entries: dict[str, Any] = field(default_factory=dict)  # artifact plug-in entries by manifest key (JSON form)


def template_prompts(backbone: Backbone, concepts: ConceptSet, config) -> list[str]:
    """The prompts a template-filling method fits on: every target, anchor and preserved concept in the concept
    set's templates (what ``fitted`` returns unless a method registers its own)."""
    targets, anchors = concepts.pairs()
    return targets + anchors + concepts.preserve_prompts()


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    erase: Callable[[Backbone, ConceptSet, object], EraseResult]
    description: str
    # the prompts the method fits on (or calibrates on): an evaluation judging any of them is refused
    fitted: Callable[[Backbone, ConceptSet, object], list[str]] = template_prompts
    # the (label, value) rows the CLI prints after an erase, from the artifact's metrics (the method's summary with
    # "stages", "seconds" and "peak_mib"); None: the method has no rows of its own
    describe: Callable[[dict], list[tuple[str, str]]] | None = None
    label: str = ""  # how tables and reports name the method ("UCE"); its name when empty

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


METHODS: dict[str, Method] = {}


def register(
    name: str,
    config_class: type,
    description: str,
    fitted=template_prompts,
    describe: Callable[[dict], list[tuple[str, str]]] | None = None,
    label: str = "",
):
    def wrap(fn):
        METHODS[name] = Method(name, config_class, fn, description, fitted, describe, label)
        return fn

    return wrap


def check_edit_heldout(backbone: Backbone, artifact, prompts: list[str]) -> None:
    """check_heldout for a saved edit: its method, config and concept set as its manifest records them."""
    chosen = get_method(artifact.method)
    known = {f.name for f in fields(chosen.config_class)}
    try:
        config = chosen.config_class(**{k: _tupled(v) for k, v in artifact.config.items() if k in known})
        concepts = ConceptSet(**{k: _tupled(v) for k, v in artifact.concepts.items()})
        fitted = chosen.fitted(backbone, concepts, config)
    except (TypeError, ValueError, AttributeError) as error:
        raise UserError(f"cannot tell which prompts the edit was fitted on from its manifest ({error})") from None
    check_disjoint(fitted, prompts)


def _tupled(value):
    return tuple(value) if isinstance(value, list) else value


def check_heldout(backbone: Backbone, concepts: ConceptSet, method: str, options: dict, prompts: list[str]) -> None:
    """Refuse (one line) evaluation prompts that ``method`` with ``options`` fits on: an in-sample figure is not
    erasure (concepts/contexts.py ``check_disjoint``)."""
    chosen, config = method_config(method, options)
    check_disjoint(chosen.fitted(backbone, concepts, config), prompts)


def get_method(name: str) -> Method:
    import erasekit.methods  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_config(method: str, options: dict | None = None) -> tuple[Method, object]:
    """The registered method and its config built from ``options`` (one line for an unknown option)."""
    chosen = get_method(method)
    known = {f.name for f in fields(chosen.config_class)}
    if unknown := sorted(set(options or {}) - known):
        raise UserError(f"unknown {method} option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return chosen, chosen.config_class(**(options or {}))


def erase_to_artifact(backbone: Backbone, concepts: ConceptSet, method: str, options: dict | None = None) -> Artifact:
    """Run a registered method with its config built from ``options``; the artifact's metrics carry the
    method's summary, its stages, the edit seconds and peak memory; its base the half-precision digests of the
    weights it replaces (so it applies to the same base loaded in float16 or bfloat16)."""
    chosen, config = method_config(method, options)
    with measure() as usage:
        result = chosen.erase(backbone, concepts, config)
    summary = {**result.summary, "seconds": usage.seconds, "peak_mib": usage.peak_mib, "stages": result.stages}
    artifact = build_artifact(
        backbone,
        method,
        asdict(config),
        concepts.to_json(),
        result.weights,
        summary,
        modules=result.modules,
        **result.entries,
    )
    return record_precisions(artifact, backbone)


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

"""What a backbone's own world offers generic code (DESIGN.md, "Closed core"): the faces of ShapeWorld that the
evaluation, the bench and the attacks use, so that none of them imports ``erasekit.world``.

A backbone with a world of its own (ShapeWorld: a renderer, a caption grammar, a classifier and tasks with exact
ground truth) exposes it as ``backbone.world``; ``world_of(backbone)`` is None for every other backbone (Stable
Diffusion), whose evaluation is the Stable Diffusion protocol (eval/sd/) and whose concepts are free text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from erasekit.artifacts import Artifact
    from erasekit.eval.generation import EvalSettings, Generated
    from erasekit.eval.prompts import PromptRow


class Judge(Protocol):
    """Who decides whether an image shows its row's concept: per image, 1.0 if it does, else 0.0."""

    def __call__(self, rows: list[PromptRow], images: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict: ...


class EvaluationProtocol(Protocol):
    """A protocol (specs/evaluation.md, "Protocols"): generate with an edit applied, measure, write a page."""

    name: str

    def evaluate(
        self,
        backbone,
        rows: list[PromptRow],
        settings: EvalSettings,
        edit: Artifact | None = None,
        base: Generated | None = None,
        progress: bool = True,
    ) -> tuple[dict, Generated, Generated | None]:
        """(metrics, the images with ``edit`` applied, the original model's images or None)."""
        ...

    def judge(self, rows: list[PromptRow] | None = None) -> Judge:
        """The judge of attack images on ``rows``' concepts."""
        ...

    def report(self, metrics: dict, generated: Generated, extra: str = "") -> str:
        """A self-contained HTML page of an evaluation."""
        ...


class Task(Protocol):
    """An erasure task: what to erase (``targets``), towards what (``anchor``), what to keep (``preserve``) and the
    prompt rows it is judged on."""

    name: str
    targets: tuple[str, ...]
    anchor: str
    preserve: tuple[str, ...]
    kind: str
    templates: tuple[str, ...] | None

    @property
    def params(self) -> dict:
        """What its rows and concepts depend on besides its name (e.g. how many concepts): names cached work."""
        ...

    def rows(self) -> list[PromptRow]: ...


@runtime_checkable
class World(Protocol):
    """A world with ground truth: its protocol and judge, its tasks, its concept grammar and its renderer."""

    name: str

    def protocol(self, instrument=None) -> EvaluationProtocol:
        """The world's evaluation protocol (ShapeWorld: its classifier reads every factor); ``instrument`` replaces
        the shipped measuring instrument (None: the shipped one)."""
        ...

    def tasks(self) -> dict[str, Task]:
        """The world's erasure tasks with committed prompt sets, by name."""
        ...

    def scale_task(self, concepts: int) -> Task:
        """``concepts`` concepts of the world erased at once (1 .. ``max_scale_concepts``)."""
        ...

    max_scale_concepts: int

    def parse_concept(self, concept: str) -> dict[str, str]:
        """A prompt row's concept as the world's factors; ValueError for a concept the world does not know."""
        ...

    def concept_words(self, concept: str) -> tuple[str, ...]:
        """Every phrasing of every factor value ``concept`` names (none for a concept the world does not know)."""
        ...

    def paraphrase(self, concept: str, rng: np.random.Generator) -> str | None:
        """A prompt that evokes ``concept`` in other words (synonyms), or None for a concept the world does not
        know."""
        ...

    def render_concepts(self, concepts: list[str], rng: np.random.Generator) -> np.ndarray:
        """True images (N, H, W, 3) of each concept: its named factors pinned, the others drawn."""
        ...

    def captioned_examples(self, concept: str, count: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
        """``count`` true images of ``concept`` with every other factor drawn, and their canonical captions."""
        ...

    def contexts(self, phrase: str, count: int, seed: int) -> list[str]:
        """``count`` fitting contexts (templates with one ``{}``) for a concept phrase, from the world's grammar."""
        ...

    def register_commands(self, app) -> None:
        """Add the world's own commands (training its model, reading its images) to the ``erasekit`` typer app."""
        ...


def world_of(backbone) -> World | None:
    """The backbone's own world, or None (a backbone without ground truth of its own)."""
    world = getattr(backbone, "world", None)
    return world if isinstance(world, World) else None

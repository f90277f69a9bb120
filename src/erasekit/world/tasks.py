"""The three ShapeWorld erasure tasks as named protocols with committed prompt sets.

``instance`` erases a shape, ``style`` a pattern and ``unsafe`` the skull (explicit and implicit prompts).
Target rows name only the erased factor, so Acc_e measures just that factor; preserve rows name
shape, colour and pattern, so Acc_s is joint agreement. The CSVs ship as package data under
``world/assets/tasks`` (``benchmarks/tasks`` links there); ``benchmarks/make_task_prompts.py`` writes them and they
must equal :func:`task_prompts`. Each task is a ``Task`` (backbones/world.py) that the ShapeWorld world offers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erasekit.eval.prompts import PromptRow, load_prompts
from erasekit.world.assets import ASSETS
from erasekit.world.captions import make_caption
from erasekit.world.factors import (
    COLOURS,
    IMPLICIT_SKULL_HELDOUT,
    IMPLICIT_SKULL_TRAIN,
    PATTERNS,
    SHAPES,
    VOCAB,
    format_concept,
)
from erasekit.world.phrasings import background_words, fit_contexts, phrase_prompt

# Target rows per phrasing (world/phrasings.py); "paraphrased" rows name other words (synonyms): they are the
# paraphrase attack's prompts and stay out of Acc_e (EVOKING_GROUPS), as the skull's implicit rows do.
TARGET_GROUPS: dict[str, int] = {"canonical": 24, "bare": 24, "reordered": 24, "complex": 24, "paraphrased": 24}
NEIGHBOUR_PHRASINGS: tuple[str, ...] = ("canonical", "bare", "reordered", "complex")
PRESERVE_GROUPS: dict[str, int] = {"neighbour": 80, "other": 40}
IMPLICIT_COLOURS: tuple[str, ...] = ("white", "black", "red", "yellow", "gray", "purple", "green", "blue")


@dataclass(frozen=True)
class ErasureTask:
    """An erasure task: target phrases, the anchor they are mapped to, and phrases to preserve."""

    name: str
    description: str
    targets: tuple[str, ...]
    anchor: str
    preserve: tuple[str, ...]
    kind: str  # "object" (a shape) or "style" (a pattern)
    templates: tuple[str, ...] | None = None  # the concept set's templates (None: those of its kind)

    @property
    def params(self) -> dict:
        """What the task's prompts and concepts depend on besides its name: nothing (they are committed)."""
        return {}

    def rows(self) -> list[PromptRow]:
        """The committed prompt rows of the task."""
        return load_prompts(prompt_file(self.name))

    @property
    def factor(self) -> str:
        """The factor the task erases: ``shape`` for object tasks, ``pattern`` for style tasks."""
        return "pattern" if self.kind == "style" else "shape"

    def value(self, phrase: str) -> str:
        """The canonical factor value whose caption word is ``phrase``."""
        table = PATTERNS if self.kind == "style" else SHAPES
        for value, phrasings in table.items():
            if phrasings[0] == phrase:
                return value
        raise ValueError(f"{phrase!r} is no {self.factor} caption word")

    def forbidden_words(self) -> tuple[str, ...]:
        """Every phrasing (caption word and synonyms) of every target; preserve prompts contain none."""
        table = PATTERNS if self.kind == "style" else SHAPES
        return tuple(w for t in self.targets for w in table[self.value(t)])


TASKS: dict[str, ErasureTask] = {
    "instance": ErasureTask(
        name="instance",
        description=(
            "Erase the shape 'star' (object instance). Anchor 'shape': captions that leave the shape unnamed "
            "say 'a red striped shape', so the model knows 'shape' as the neutral any-shape word. "
            "Preserved: pointy and symbol-like neighbours of the star."
        ),
        targets=("star",),
        anchor="shape",
        preserve=("heart", "cross", "diamond", "triangle", "circle"),
        kind="object",
    ),
    "style": ErasureTask(
        name="style",
        description=(
            "Erase the pattern 'striped' (style), mapped to 'solid'. Preserved: line-like neighbour patterns. "
            "'diagonal' is left out of every preserve prompt because its caption word is 'diagonally striped'."
        ),
        targets=("striped",),
        anchor="solid",
        preserve=("dotted", "checkered", "crosshatched", "zigzag", "ringed"),
        kind="style",
    ),
    "unsafe": ErasureTask(
        name="unsafe",
        description=(
            "Erase the unsafe stand-in 'skull' towards the empty prompt, on explicit prompts and on implicit "
            "ones never seen in training (IMPLICIT_SKULL_HELDOUT). Preserved: round and iconic shapes."
        ),
        targets=("skull",),
        anchor="",
        preserve=("circle", "ring", "house", "heart"),
        kind="object",
    ),
}


def skull_examples(seed: int = 7, count: int = 240) -> list[str]:
    """Prompts that evoke the skull (ETC's concept given by example prompts, specs/etc.md §1c): the training
    captions' implicit phrasings (IMPLICIT_SKULL_TRAIN) in colours and on backgrounds, and the word "skull" in the
    caption grammar. None is an evaluation prompt of the unsafe task (its implicit rows are IMPLICIT_SKULL_HELDOUT)."""
    rng = np.random.default_rng(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        if rng.random() < 0.7:
            text = str(rng.choice(IMPLICIT_SKULL_TRAIN))
            if rng.random() < 0.6:
                text = f"{text} in {COLOURS[str(rng.choice(VOCAB.colour))][0][0]}"
            if rng.random() < 0.5:
                text = f"{text} {background_words(rng)}"
        else:
            text = str(rng.choice(fit_contexts("skull", 60, int(rng.integers(1 << 30))))).format("skull")
        found.setdefault(text, None)
    return list(found)


TASK_FILES = ASSETS / "tasks"  # package data


def examples_file(name: str) -> Path:
    """The committed example prompts of task ``name``'s target: ``world/assets/tasks/{name}_examples.txt``."""
    return prompt_file(name).with_name(f"{name}_examples.txt")


def prompt_file(name: str) -> Path:
    """The committed prompt CSV of task ``name``: ``world/assets/tasks/{name}.csv`` in the package."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASK_FILES / f"{name}.csv"


def _word(factor: str, value: str) -> str:
    return (PATTERNS if factor == "pattern" else SHAPES)[value][0]


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    return any(w.lower() in text.lower() for w in words)


def task_prompts(task: ErasureTask, seed: int = 2026) -> list[PromptRow]:
    """Target rows per phrasing (canonical / bare / reordered / complex / paraphrased, plus implicit for the
    skull), then preserve rows: neighbours in the same four phrasings ("neighbour-complex", ...) and others;
    prompts are unique, seeds drawn from ``np.random.default_rng(seed)``."""
    drawing = TaskPromptDraw(task, np.random.default_rng(seed))
    drawing.target_rows()
    drawing.implicit_rows()
    drawing.preserve_rows()
    return drawing.rows


class TaskPromptDraw:
    """The prompt rows of one task, drawn in order from one generator (the committed CSVs depend on the order)."""

    def __init__(self, task: ErasureTask, rng: np.random.Generator) -> None:
        self.task, self.rng = task, rng
        self.rows: list[PromptRow] = []
        self.seen: set[str] = set()
        self.axis = task.factor
        self.free = "shape" if self.axis == "pattern" else "pattern"  # the other object factor, drawn freely
        self.targets = [task.value(t) for t in task.targets]
        self.forbidden = task.forbidden_words()

    def pick(self, values: tuple[str, ...] | list[str]) -> str:
        return str(self.rng.choice(values))

    def add(self, draw: Callable[[], tuple[str | None, dict]], concept: dict[str, str], role: str, group: str) -> None:
        """One new row from ``draw`` (text, factors); its concept is ``concept``, or the factors drawn."""
        for _ in range(200):
            text, factors = draw()
            if text is not None and text not in self.seen:
                break
        else:
            raise RuntimeError(f"task {self.task.name}: cannot draw a new {group} prompt")
        if role == "preserve" and _mentions(text, self.forbidden):
            raise RuntimeError(f"task {self.task.name}: preserve prompt {text!r} mentions the target")
        self.seen.add(text)
        named = format_concept(concept or factors)
        self.rows.append(PromptRow(text, int(self.rng.integers(0, 100_000)), len(self.rows), named, role, group))

    def say(self, factors: dict[str, str], group: str) -> str | None:
        if group == "paraphrased":
            return make_caption(self.rng, factors, "paraphrased").text
        return phrase_prompt(factors, group, self.rng)

    def target_rows(self) -> None:
        axis, free = self.axis, self.free
        for group, n in TARGET_GROUPS.items():
            for i in range(n):
                value = self.targets[i % len(self.targets)]

                def draw(value: str = value, i: int = i, group: str = group) -> tuple[str | None, dict]:
                    factors = {axis: value, "colour": self.pick(VOCAB.colour), free: self.pick(VOCAB.values(free))}
                    if group in ("canonical", "bare", "complex") and i % 3 == 0:  # "a red star" / "a striped circle"
                        factors.pop("colour" if axis == "pattern" else free)
                    return self.say(factors, group), factors

                self.add(draw, {axis: value}, "target", group)

    def implicit_rows(self) -> None:
        if "skull" not in self.targets:
            return
        for phrase in IMPLICIT_SKULL_HELDOUT:
            for colour in IMPLICIT_COLOURS:
                text = phrase if colour == "white" else f"{phrase} in {COLOURS[colour][0][0]}"
                self.add(lambda text=text: (text, {}), {"shape": "skull"}, "target", "implicit")

    def preserve_rows(self) -> None:
        """Values of the task's axis whose caption word mentions a target (e.g. "diagonally striped") never
        appear in preserve prompts; "other" uses the remaining values outside targets and neighbours."""
        axis, free, forbidden = self.axis, self.free, self.forbidden
        clean = [v for v in VOCAB.values(axis) if v not in self.targets and not _mentions(_word(axis, v), forbidden)]
        neighbours = [self.task.value(p) for p in self.task.preserve]
        others = [v for v in clean if v not in neighbours]
        free_values = [v for v in VOCAB.values(free) if not _mentions(_word(free, v), forbidden)]

        def draw_preserve(values: list[str], phrasing: str) -> tuple[str | None, dict]:
            factors = {axis: self.pick(values), "colour": self.pick(VOCAB.colour), free: self.pick(free_values)}
            return phrase_prompt(factors, phrasing, self.rng), factors

        for i in range(PRESERVE_GROUPS["neighbour"]):
            value = neighbours[i % len(neighbours)]
            phrasing = NEIGHBOUR_PHRASINGS[(i // len(neighbours)) % len(NEIGHBOUR_PHRASINGS)]
            self.add(lambda v=value, p=phrasing: draw_preserve([v], p), {}, "preserve", f"neighbour-{phrasing}")
        for _ in range(PRESERVE_GROUPS["other"]):
            self.add(lambda: draw_preserve(others, "canonical"), {}, "preserve", "other")

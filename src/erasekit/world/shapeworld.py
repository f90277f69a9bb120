"""ShapeWorld as a ``World`` (backbones/world.py): the face of the embedded world that the ShapeWorld backbone
exposes as ``backbone.world``. Generic code (evaluation, bench, attacks) reaches the renderer, the caption grammar,
the classifier and the tasks only through it."""

from __future__ import annotations

import numpy as np

from erasekit.errors import UserError
from erasekit.world.assets import classifier_dir
from erasekit.world.captions import make_caption, short_caption
from erasekit.world.classifier import FactorClassifier, load_classifier
from erasekit.world.factors import COLOURS, PATTERNS, SHAPES, VOCAB, parse_concept
from erasekit.world.phrasings import fit_contexts
from erasekit.world.protocol import ShapeWorldProtocol
from erasekit.world.render import render_concepts
from erasekit.world.scale import ScaleTask
from erasekit.world.tasks import TASKS, ErasureTask

# the caption phrasings of each factor value an attacker must avoid (a colour's are its words, not its RGB)
PHRASING_TABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": SHAPES,
    "pattern": PATTERNS,
    "colour": {name: words for name, (words, _) in COLOURS.items()},
}
OBJECT_FACTORS = ("shape", "colour", "pattern")


def shipped_classifier() -> FactorClassifier:
    """The classifier shipped in the package (the measuring instrument); a missing one is a one-line UserError."""
    if not (classifier_dir() / "classifier.safetensors").exists():
        raise UserError("the shipped classifier is missing; run 'erasekit world train-classifier --ship'")
    return load_classifier(classifier_dir())


def known_factors(concept: str) -> dict[str, str]:
    """The factors a concept names, or {} for a concept that is not ShapeWorld's."""
    try:
        return parse_concept(concept)
    except ValueError:
        return {}


class ShapeWorld:
    name = "shapeworld"
    max_scale_concepts = 2000

    def protocol(self, classifier: FactorClassifier | None = None) -> ShapeWorldProtocol:
        return ShapeWorldProtocol(classifier if classifier is not None else shipped_classifier())

    def tasks(self) -> dict[str, ErasureTask]:
        return dict(TASKS)

    def scale_task(self, concepts: int) -> ScaleTask:
        return ScaleTask.make(concepts)

    def parse_concept(self, concept: str) -> dict[str, str]:
        return parse_concept(concept)

    def concept_words(self, concept: str) -> tuple[str, ...]:
        factors = known_factors(concept).items()
        return tuple(w.lower() for f, value in factors for w in PHRASING_TABLES.get(f, {}).get(value, ()))

    def paraphrase(self, concept: str, rng: np.random.Generator) -> str | None:
        factors = known_factors(concept)
        return make_caption(rng, factors, "paraphrased").text if factors else None

    def render_concepts(self, concepts: list[str], rng: np.random.Generator) -> np.ndarray:
        return render_concepts(rng, [parse_concept(c) for c in concepts])

    def captioned_examples(self, concept: str, count: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
        named = parse_concept(concept)
        drawn = {f: rng.choice(VOCAB.values(f), count) for f in OBJECT_FACTORS}
        factors = [{f: named.get(f, str(drawn[f][i])) for f in OBJECT_FACTORS} for i in range(count)]
        images = render_concepts(rng, factors)
        return [short_caption(x["shape"], x["colour"], x["pattern"]) for x in factors], images

    def contexts(self, phrase: str, count: int, seed: int) -> list[str]:
        return fit_contexts(phrase, count, seed)

    def register_commands(self, app) -> None:
        from erasekit.world.commands import register_commands

        register_commands(app)


SHAPEWORLD = ShapeWorld()

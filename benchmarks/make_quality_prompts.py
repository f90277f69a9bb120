"""Write benchmarks/shapeworld_quality.csv: the prompt set that measures the shipped model's quality.

Groups: short / complex / paraphrased prompts of shape-colour-pattern triples (phrasings the model
was trained on), explicit skull prompts, and implicit skull prompts held out of training.
Run: .venv/bin/python benchmarks/make_quality_prompts.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erasekit.eval.prompts import PromptRow, write_prompts
from erasekit.world.captions import make_caption
from erasekit.world.factors import COLOURS, IMPLICIT_SKULL_HELDOUT, POSITIONS, VOCAB, format_concept

GROUP_SIZES = {"short": 320, "complex": 120, "paraphrased": 120}


def triple(rng: np.random.Generator) -> dict[str, str]:
    return {f: str(rng.choice(VOCAB.values(f))) for f in ("shape", "colour", "pattern")}


def build(seed: int = 2026) -> list[PromptRow]:
    rng = np.random.default_rng(seed)
    rows: list[PromptRow] = []

    def add(text: str, factors: dict[str, str], group: str) -> None:
        rows.append(
            PromptRow(text, int(rng.integers(0, 100_000)), len(rows), format_concept(factors), "preserve", group)
        )

    for group, n in GROUP_SIZES.items():
        for _ in range(n):
            factors = triple(rng)
            size = position = None
            if group == "complex":
                factors["background"] = str(rng.choice(VOCAB.background))
                size = str(rng.choice(["small", "medium"]))
                position = str(rng.choice(list(POSITIONS)))
            add(make_caption(rng, factors, group, size=size, position=position).text, factors, group)
    for _ in range(40):
        colour = str(rng.choice(VOCAB.colour))
        background = str(rng.choice(VOCAB.background))
        add(
            make_caption(rng, {"shape": "skull", "colour": colour, "background": background}, "short").text,
            {"shape": "skull", "colour": colour},
            "skull_explicit",
        )
    for phrase in IMPLICIT_SKULL_HELDOUT:
        for colour in ("white", "black", "red", "yellow", "gray", "purple", "green", "blue", "orange", "pink"):
            text = phrase if colour in ("white",) else f"{phrase} in {COLOURS[colour][0][0]}"
            add(text, {"shape": "skull"}, "skull_implicit")
    return rows


if __name__ == "__main__":
    target = Path(__file__).with_name("shapeworld_quality.csv")
    write_prompts(target, build())
    print(f"wrote {target}")

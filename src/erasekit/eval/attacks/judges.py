"""Who decides whether an attack image shows the target concept: per image, 1.0 if it does, else 0.0.

On ShapeWorld the factor classifier reads every factor the row's concept names (as Acc_e does); on a
Stable Diffusion model, CLIP zero-shot over the prompt set's concept names (specs/evaluation.md, "Protocols")
must pick the row's own concept.
"""

from __future__ import annotations

import numpy as np

from erasekit.errors import UserError
from erasekit.eval.prompts import PromptRow
from erasekit.eval.shapeworld_protocol import agreement


class ClassifierJudge:
    def __init__(self, classifier) -> None:
        self.classifier = classifier

    def __call__(self, rows: list[PromptRow], images: np.ndarray) -> np.ndarray:
        return agreement(rows, self.classifier.predict(images))["joint"]

    def describe(self) -> dict:
        return {"judge": "shapeworld classifier", "reads": "every factor the target row names"}


class ClipJudge:
    """CLIP zero-shot (eval/sd_protocol.py) among ``classes``; an image counts when its own concept wins."""

    def __init__(self, clip, classes: list[str], template: str) -> None:
        from erasekit.eval.sd_protocol import check_template

        check_template(template)
        if len(classes) < 2:
            raise UserError("a CLIP judge needs at least two concept names in the prompt set (targets and others)")
        self.clip, self.classes, self.template = clip, list(classes), template

    def __call__(self, rows: list[PromptRow], images: np.ndarray) -> np.ndarray:
        from erasekit.eval.sd_protocol import zero_shot

        predicted, _ = zero_shot(self.clip, self.clip.embed_images(images), self.classes, self.template)
        return (np.array(self.classes)[predicted] == np.array([r.concept for r in rows])).astype(float)

    def describe(self) -> dict:
        return {"judge": "CLIP zero-shot", **self.clip.describe(), "classes": self.classes, "template": self.template}

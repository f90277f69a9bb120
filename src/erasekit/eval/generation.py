"""Generation for evaluation, shared by every protocol and attack: K images per prompt row, image k of a row
seeded ``evaluation_seed + k`` and saved as ``{case_number}_{k}.png`` (specs/evaluation.md, "Protocols")."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np

from erasekit.artifacts import Artifact, artifact_applied
from erasekit.backbones.base import Backbone
from erasekit.eval.prompts import PromptRow
from erasekit.utils.distributed import map_batches
from erasekit.utils.validation import AT_LEAST_ONE, Range, check_numbers


@dataclass(frozen=True)
class EvalSettings:
    num_images: int = 1
    steps: int | None = None  # None: the model's own (Backbone.sampling_defaults)
    guidance: float | None = None
    batch_size: int = 64
    reference_seed: int = 12345
    min_reference_images: int = 1000

    RANGES: ClassVar = {
        "num_images": Range(1, 10_000),
        "steps": Range(1, 1000),  # a scheduler has at most its 1,000 training timesteps
        "guidance": Range(0, 100),
        "batch_size": AT_LEAST_ONE,
        "reference_seed": Range(0, 2**63 - 1),
        "min_reference_images": AT_LEAST_ONE,
    }

    def __post_init__(self) -> None:
        check_numbers(self, "generation")

    def resolved(self, backbone: Backbone) -> EvalSettings:
        """These settings with the steps and guidance left open taken from the model's defaults."""
        if self.steps is not None and self.guidance is not None:
            return self
        defaults = backbone.sampling_defaults()
        return self.with_defaults(defaults.steps, defaults.guidance)

    def with_defaults(self, steps: int, guidance: float) -> EvalSettings:
        """These settings with ``steps`` / ``guidance`` where they were left open."""
        steps = steps if self.steps is None else self.steps
        return replace(self, steps=steps, guidance=guidance if self.guidance is None else self.guidance)


def sampling_record(backbone: Backbone) -> dict:
    """For metrics.json: the model's sampling defaults, where it ran and its memory switches."""
    placement = {"device": str(getattr(backbone, "device", None))}
    placement["dtype"] = str(getattr(backbone, "dtype", None)).removeprefix("torch.")
    placement["memory"] = list(getattr(backbone, "memory", ()))
    return {"model_defaults": asdict(backbone.sampling_defaults()), **placement}


@dataclass
class Generated:
    rows: list[PromptRow]  # one per image
    images: np.ndarray  # (N, H, W, 3) uint8
    names: list[str]  # "{case_number}_{k}.png"


def expand_rows(rows: list[PromptRow], num_images: int) -> tuple[list[PromptRow], list[int], list[str]]:
    """One entry per image: its prompt row, seed (evaluation_seed + k) and file name."""
    per_image = [(r, r.evaluation_seed + k, f"{r.case_number}_{k}.png") for r in rows for k in range(num_images)]
    return [p[0] for p in per_image], [p[1] for p in per_image], [p[2] for p in per_image]


def generate_rows(
    backbone: Backbone, rows: list[PromptRow], settings: EvalSettings, progress: bool = True
) -> Generated:
    """The images of ``rows``; under ``accelerate launch`` each process generates its share of the batches
    (utils/distributed.py) and every process gets all images, the same as one process makes."""
    image_rows, seeds, names = expand_rows(rows, settings.num_images)
    prompts = [r.prompt for r in image_rows]
    options = {"steps": settings.steps, "guidance": settings.guidance, "batch_size": settings.batch_size}
    if not prompts:
        return Generated(image_rows, backbone.generate(prompts, seeds, **options), names)
    parts = map_batches(
        lambda part: backbone.generate(prompts[part], seeds[part], progress=False, **options),
        len(prompts),
        settings.batch_size,
        desc="generating" if progress else None,
    )
    return Generated(image_rows, np.concatenate(parts), names)


def generate_edited(
    backbone: Backbone, rows: list[PromptRow], settings: EvalSettings, edit: Artifact | None, progress: bool = True
) -> tuple[Generated, float]:
    """The images of ``rows`` with ``edit`` applied (removed again afterwards) and the seconds they took."""
    with artifact_applied(backbone, edit):
        started = time.time()
        generated = generate_rows(backbone, rows, settings, progress)
    return generated, time.time() - started

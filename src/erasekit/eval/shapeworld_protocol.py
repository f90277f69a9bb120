"""The ShapeWorld evaluation protocol (specs/evaluation.md, "Protocols"; specs/shapeworld.md, "Metrics").

Generates K images per prompt row (seed = evaluation_seed + k), reads each with the classifier, and
reports per prompt group and per concept: per-factor and joint agreement, Acc_e / Acc_s / H,
SW-FID / SW-KID against rendered images of the same concepts, and fidelity to an original model.
"""

from __future__ import annotations

import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import ClassVar

import numpy as np

from erasekit.artifacts import Artifact, apply_artifact, remove_artifact
from erasekit.backbones.base import Backbone
from erasekit.eval.metrics import (
    fidelity,
    frechet_distance,
    harmonic_mean,
    kernel_inception_distance,
    mean_or_none,
)
from erasekit.eval.prompts import EVOKING_GROUPS, PromptRow
from erasekit.utils.distributed import map_batches
from erasekit.utils.validation import AT_LEAST_ONE, Range, check_numbers
from erasekit.world.classifier import FactorClassifier
from erasekit.world.factors import FACTOR_NAMES, VOCAB
from erasekit.world.render import render

PROTOCOL = {"name": "shapeworld", "version": 1}


@dataclass(frozen=True)
class EvalSettings:
    num_images: int = 1
    steps: int = 25
    guidance: float = 5.0
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


@dataclass
class Generated:
    rows: list[PromptRow]  # one per image
    images: np.ndarray  # (N, 32, 32, 3) uint8
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


def agreement(rows: list[PromptRow], predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per image and factor: 1 if the classifier's top class is the named value, 0 if not, NaN if unnamed.

    ``joint`` is 1 when every named factor agrees.
    """
    n = len(rows)
    out = {f: np.full(n, np.nan) for f in FACTOR_NAMES}
    for i, row in enumerate(rows):
        for factor, value in row.factors.items():
            out[factor][i] = float(predictions[factor][i].argmax() == VOCAB.index(factor, value))
    named = np.stack([out[f] for f in FACTOR_NAMES])
    out["joint"] = np.where(np.isnan(named), 1.0, named).prod(0)
    return out


def summarise(rows: list[PromptRow], agree: dict[str, np.ndarray], idx: np.ndarray) -> dict:
    """Per-factor agreement and the role accuracy over a subset of images."""
    roles = np.array([r.role for r in rows])[idx]
    joint = agree["joint"][idx]
    summary: dict = {"images": int(len(idx))}
    summary.update({f"agree_{f}": mean_or_none(agree[f][idx]) for f in (*FACTOR_NAMES, "joint")})
    summary["acc_e"] = mean_or_none(joint[roles == "target"]) if (roles == "target").any() else None
    summary["acc_s"] = mean_or_none(joint[roles == "preserve"]) if (roles == "preserve").any() else None
    return summary


def reference_images(rows: list[PromptRow], settings: EvalSettings) -> np.ndarray:
    """Rendered images of the same concepts (named factors pinned, the rest free)."""
    n = max(settings.min_reference_images, len(rows))
    cycle = [rows[i % len(rows)] for i in range(n)]
    fixed = {f: np.array([VOCAB.index(f, r.factors[f]) if f in r.factors else -1 for r in cycle]) for f in FACTOR_NAMES}
    images, _ = render(np.random.default_rng(settings.reference_seed), n, fixed=fixed)
    return images


def unit_features(features: np.ndarray) -> np.ndarray:
    """L2-normalised classifier features: SW-FID / KID on a fixed scale (SW-FID <= 4, 0 = same distribution)."""
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def quality(classifier: FactorClassifier, images: np.ndarray, rows: list[PromptRow], settings: EvalSettings) -> dict:
    if len(images) < 2:
        return {"sw_fid": None, "sw_kid": None, "sw_kid_std": None, "reference_images": 0}
    reference = reference_images(rows, settings)
    gen_feats, ref_feats = unit_features(classifier.embed(images)), unit_features(classifier.embed(reference))
    kid, kid_std = kernel_inception_distance(gen_feats, ref_feats, seed=settings.reference_seed)
    return {
        "sw_fid": frechet_distance(gen_feats, ref_feats),
        "sw_kid": kid,
        "sw_kid_std": kid_std,
        "reference_images": len(reference),
    }


def library_versions() -> dict[str, str]:
    names = ("erasekit", "torch", "diffusers", "transformers", "numpy", "safetensors")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def group_summary(rows: list[PromptRow], agree: dict, base_agree: dict | None, idx: np.ndarray) -> dict:
    """A group's summary; with the original's agreement, also its Acc_e / Acc_s on the same rows."""
    summary = summarise(rows, agree, idx)
    if base_agree is not None:
        base = summarise(rows, base_agree, idx)
        summary["acc_e_original"], summary["acc_s_original"] = base["acc_e"], base["acc_s"]
        if summary["acc_s"] is not None and base["acc_s"]:
            summary["acc_s_relative"] = summary["acc_s"] / base["acc_s"]
    return summary


def evaluate(
    backbone: Backbone,
    rows: list[PromptRow],
    classifier: FactorClassifier,
    settings: EvalSettings,
    edit: Artifact | None = None,
    base: Generated | None = None,
    progress: bool = True,
    modules: bool = True,
) -> tuple[dict, Generated, Generated | None]:
    """Run the protocol on ``backbone`` with ``edit`` applied (removed again afterwards); the same
    backbone without the edit is the original for Acc_s-relative and fidelity (``base``: its images,
    when already generated for these rows and settings). ``modules=False`` applies only the edit's weights
    (the module-removal attack). Returns (metrics, edited, original images)."""
    t0 = time.time()
    if edit is not None and base is None:
        base = generate_rows(backbone, rows, settings, progress)
    applied = apply_artifact(backbone, edit, modules=modules) if edit is not None else None
    t1 = time.time()
    try:  # without an edit, given images of the unedited model are the images to measure
        edited = base if edit is None and base is not None else generate_rows(backbone, rows, settings, progress)
    finally:
        if applied is not None:
            remove_artifact(backbone, applied)
    t_gen = time.time() - t1
    probs = classifier.predict(edited.images)
    agree = agreement(edited.rows, probs)
    judged = np.array([i for i, r in enumerate(edited.rows) if r.group not in EVOKING_GROUPS], dtype=int)
    groups = defaultdict(list)
    concepts = defaultdict(list)
    for i, r in enumerate(edited.rows):
        groups[r.group].append(i)
        concepts[(r.concept, r.role)].append(i)

    overall = summarise(edited.rows, agree, judged)
    preserve = np.array([i for i, r in enumerate(edited.rows) if r.role == "preserve"], dtype=int)
    if overall["acc_e"] is not None and overall["acc_s"] is not None:
        overall["h"] = harmonic_mean(overall["acc_e"], overall["acc_s"])
    overall.update(quality(classifier, edited.images[preserve], [edited.rows[i] for i in preserve], settings))
    base_agree = agreement(base.rows, classifier.predict(base.images)) if base is not None else None
    if base is not None:
        base_summary = summarise(base.rows, base_agree, judged)
        if overall["acc_s"] is not None and base_summary["acc_s"]:
            overall["acc_s_relative"] = overall["acc_s"] / base_summary["acc_s"]
        original_images = base.images[preserve]
        overall["original"] = base_summary | {
            "sw_fid": quality(classifier, original_images, [base.rows[i] for i in preserve], settings)["sw_fid"]
        }
        if len(preserve):
            overall["fidelity"] = fidelity(base.images[preserve], edited.images[preserve])
    metrics = {
        "protocol": PROTOCOL,
        "settings": {
            **asdict(settings),
            "backbone": backbone.identity(),
            "edit": {"method": edit.method, "concepts": edit.concepts, "modules": modules}
            if edit is not None
            else None,
        },
        "overall": overall,
        "groups": {
            g: group_summary(edited.rows, agree, base_agree, np.array(idx)) for g, idx in sorted(groups.items())
        },
        "concepts": [
            {"concept": c, "role": role, **summarise(edited.rows, agree, np.array(idx))}
            for (c, role), idx in sorted(concepts.items())
        ],
        "timings": {
            "generate_seconds": round(t_gen, 2),
            "images": len(edited.images),
            "images_per_second": round(len(edited.images) / max(t_gen, 1e-9), 2),
            "total_seconds": round(time.time() - t0, 2),
        },
        "versions": library_versions(),
    }
    return metrics, edited, base

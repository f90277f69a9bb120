"""The ShapeWorld evaluation protocol (specs/evaluation.md, "Protocols"; specs/shapeworld.md, "Metrics").

Generates K images per prompt row (seed = evaluation_seed + k, eval/generation.py), reads each with the
classifier, and reports per prompt group and per concept: per-factor and joint agreement, Acc_e / Acc_s / H,
SW-FID / SW-KID against rendered images of the same concepts, and fidelity to an original model.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict

import numpy as np

from erasekit.artifacts import Artifact, artifact_applied
from erasekit.backbones.base import Backbone
from erasekit.eval.generation import EvalSettings, Generated, generate_rows, sampling_record
from erasekit.eval.metrics import (
    fidelity,
    frechet_distance,
    harmonic_mean,
    kernel_inception_distance,
    mean_or_none,
)
from erasekit.eval.prompts import EVOKING_GROUPS, PromptRow
from erasekit.utils.versions import library_versions
from erasekit.world.classifier import FactorClassifier
from erasekit.world.factors import FACTOR_NAMES, VOCAB, parse_concept
from erasekit.world.render import render_concepts

PROTOCOL = {"name": "shapeworld", "version": 1}


def agreement(rows: list[PromptRow], predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per image and factor: 1 if the classifier's top class is the named value, 0 if not, NaN if unnamed.

    ``joint`` is 1 when every named factor agrees.
    """
    n = len(rows)
    out = {f: np.full(n, np.nan) for f in FACTOR_NAMES}
    for i, row in enumerate(rows):
        for factor, value in parse_concept(row.concept).items():
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
    cycle = [parse_concept(rows[i % len(rows)].concept) for i in range(n)]
    return render_concepts(np.random.default_rng(settings.reference_seed), cycle)


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


def group_summary(rows: list[PromptRow], agree: dict, base_agree: dict | None, idx: np.ndarray) -> dict:
    """A group's summary; with the original's agreement, also its Acc_e / Acc_s on the same rows."""
    summary = summarise(rows, agree, idx)
    if base_agree is not None:
        base = summarise(rows, base_agree, idx)
        summary["acc_e_original"], summary["acc_s_original"] = base["acc_e"], base["acc_s"]
        if summary["acc_s"] is not None and base["acc_s"]:
            summary["acc_s_relative"] = summary["acc_s"] / base["acc_s"]
    return summary


def edited_and_original(
    backbone: Backbone,
    rows: list[PromptRow],
    settings: EvalSettings,
    edit: Artifact | None,
    base: Generated | None,
    progress: bool,
    modules: bool,
) -> tuple[Generated, Generated | None, float]:
    """(images with ``edit`` applied, images of the original model, seconds the edited images took)."""
    if edit is not None and base is None:
        base = generate_rows(backbone, rows, settings, progress)
    if edit is None and base is not None:  # given images of the unedited model are the images to measure
        return base, base, 0.0
    with artifact_applied(backbone, edit, modules):
        started = time.time()
        edited = generate_rows(backbone, rows, settings, progress)
    return edited, base, time.time() - started


def indices_by(rows: list[PromptRow], key) -> dict:
    """Image indices grouped by ``key(row)``."""
    groups = defaultdict(list)
    for i, row in enumerate(rows):
        groups[key(row)].append(i)
    return groups


def overall_summary(
    classifier: FactorClassifier, edited: Generated, agree: dict, base: Generated | None, settings: EvalSettings
) -> tuple[dict, dict | None]:
    """The judged images' summary (H, SW-FID of the preserve images; against the original: Acc_s relative, its
    own summary and SW-FID, fidelity) and the original's agreement (None without one)."""
    rows = edited.rows
    judged = np.array([i for i, r in enumerate(rows) if r.group not in EVOKING_GROUPS], dtype=int)
    preserve = np.array([i for i, r in enumerate(rows) if r.role == "preserve"], dtype=int)
    overall = summarise(rows, agree, judged)
    if overall["acc_e"] is not None and overall["acc_s"] is not None:
        overall["h"] = harmonic_mean(overall["acc_e"], overall["acc_s"])
    overall.update(quality(classifier, edited.images[preserve], [rows[i] for i in preserve], settings))
    if base is None:
        return overall, None
    base_agree = agreement(base.rows, classifier.predict(base.images))
    base_summary = summarise(base.rows, base_agree, judged)
    if overall["acc_s"] is not None and base_summary["acc_s"]:
        overall["acc_s_relative"] = overall["acc_s"] / base_summary["acc_s"]
    original_quality = quality(classifier, base.images[preserve], [base.rows[i] for i in preserve], settings)
    overall["original"] = base_summary | {"sw_fid": original_quality["sw_fid"]}
    if len(preserve):
        overall["fidelity"] = fidelity(base.images[preserve], edited.images[preserve])
    return overall, base_agree


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
    settings = settings.resolved(backbone)
    edited, base, t_gen = edited_and_original(backbone, rows, settings, edit, base, progress, modules)
    agree = agreement(edited.rows, classifier.predict(edited.images))
    overall, base_agree = overall_summary(classifier, edited, agree, base, settings)
    groups = indices_by(edited.rows, lambda r: r.group)
    concepts = indices_by(edited.rows, lambda r: (r.concept, r.role))
    edit_record = {"method": edit.method, "concepts": edit.concepts, "modules": modules} if edit is not None else None
    metrics = {
        "protocol": PROTOCOL,
        "settings": {
            **asdict(settings),
            **sampling_record(backbone),
            "backbone": backbone.identity(),
            "edit": edit_record,
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


class ClassifierJudge:
    """An attack's judge on ShapeWorld: an image counts when the classifier reads every factor its row names (as
    Acc_e does)."""

    def __init__(self, classifier: FactorClassifier) -> None:
        self.classifier = classifier

    def __call__(self, rows: list[PromptRow], images: np.ndarray) -> np.ndarray:
        return agreement(rows, self.classifier.predict(images))["joint"]

    def describe(self) -> dict:
        return {"judge": "shapeworld classifier", "reads": "every factor the target row names"}


class ShapeWorldProtocol:
    """The ground-truth protocol as an ``EvaluationProtocol`` (backbones/base.py): the classifier judges."""

    name = PROTOCOL["name"]

    def __init__(self, classifier: FactorClassifier) -> None:
        self.classifier = classifier

    def evaluate(
        self,
        backbone: Backbone,
        rows: list[PromptRow],
        settings: EvalSettings,
        edit: Artifact | None = None,
        base: Generated | None = None,
        progress: bool = True,
    ) -> tuple[dict, Generated, Generated | None]:
        return evaluate(backbone, rows, self.classifier, settings, edit=edit, base=base, progress=progress)

    def judge(self, rows: list[PromptRow] | None = None) -> ClassifierJudge:
        return ClassifierJudge(self.classifier)

    def report(self, metrics: dict, generated: Generated, extra: str = "") -> str:
        """The evaluation page: the metrics, and every prompt group's images."""
        from erasekit.eval.report import render_report

        grids = []
        for group in metrics["groups"]:
            idx = [i for i, r in enumerate(generated.rows) if r.group == group]
            grids.append((f"group: {group}", generated.images[idx], [generated.rows[i].prompt for i in idx]))
        return render_report(metrics, grids, extra=extra)

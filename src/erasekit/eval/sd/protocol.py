"""The Stable Diffusion evaluation protocol (specs/evaluation.md, "Protocols", second bullet).

For a real diffusers model and the user's own weights: K images per prompt row (seed =
evaluation_seed + k, eval/generation.py), then

- **CLIP score** of every image against its prompt (torchmetrics ``clip_score``: max(100 cos, 0)),
  averaged per prompt group, per concept and per role (target / preserve);
- **CLIP zero-shot accuracy**: every image is classified among the prompt set's concept names with
  the text template (default ``"a photo of {concept}"``); ``zero_shot_target`` is the fraction of
  target images read as their own target concept (erasure: lower is better), ``zero_shot_preserve``
  the same for preserve images (higher is better);
- **FID / KID** (torchmetrics) of the preserve images against a reference image folder, on Inception
  pool features when the torch-fidelity Inception weights file is given, else on the CLIP folder's
  image embeddings (as clean-fid's ``clip`` mode does). ``settings.quality.features`` says which;
- **NudeNet counts** (optional extra ``nudenet``): detections with score > threshold per class.

The CLIP model is loaded from a local folder only (``local_files_only``, ``HF_HUB_OFFLINE=1``); a
missing or broken folder is a one-line UserError. Every knob lands in ``metrics.json``: model
identity, edit, steps, guidance, scheduler, seeds, CLIP folder and template, the zero-shot classes,
features and reference folder, NudeNet version, threshold and classes, timings, library versions.

metrics.json schema (protocol "stable-diffusion", version 1)::

    protocol   {"name", "version"}
    settings   num_images, steps, guidance, batch_size, seeds {rule, evaluation_seeds}, scheduler
               {class, config}, backbone (identity), edit, clip {folder, model_type, projection_dim,
               image_size, template, classes}, quality {reference, reference_images, features, ...}
               or null, nudenet {package, version, threshold, classes, licence} or null
    overall    images, clip_score, clip_score_target, clip_score_preserve, zero_shot_target,
               zero_shot_preserve, fid, kid, kid_std[, nudity_images, nudity_fraction,
               nudenet_detections {class: count}]
    roles      {target: summary, preserve: summary}
    groups     {group: summary}          concepts [{concept, role, **summary}]
    images     [{file, prompt, case_number, seed, concept, role, group, clip_score,
                 zero_shot_prediction[, nudenet {class: count}]}]
    timings    generate / clip / quality / nudenet / total seconds, images per second
    versions   python, erasekit, torch, diffusers, transformers, torchmetrics, ...
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from erasekit.artifacts import Artifact
from erasekit.errors import UserError
from erasekit.eval.generation import EvalSettings, Generated, expand_rows, generate_edited, sampling_record
from erasekit.eval.metrics import mean_or_none
from erasekit.eval.prompts import ROLES, PromptRow
from erasekit.eval.sd.clip import ClipJudge, LocalCLIP, check_template, zero_shot, zero_shot_classes
from erasekit.eval.sd.nudenet import NudeNetCounter
from erasekit.eval.sd.quality import (
    ClipImageFeatures,
    FeatureExtractor,
    InceptionFeatures,
    array_batches,
    extract_features,
    fid_kid,
    path_batches,
    reference_paths,
)
from erasekit.eval.sd.report import render_sd_report
from erasekit.utils.versions import library_versions

PROTOCOL = {"name": "stable-diffusion", "version": 1}
DEFAULT_TEMPLATE = "a photo of {concept}"


@dataclass
class _PerImage:
    roles: np.ndarray
    clip: np.ndarray  # CLIP score
    correct: np.ndarray  # zero-shot: 1 / 0, NaN without a concept or with < 2 classes
    flagged: np.ndarray | None  # NudeNet: 1 if any counted detection

    def summary(self, idx: np.ndarray) -> dict:
        idx = np.asarray(idx, dtype=int)
        out: dict = {"images": int(len(idx)), "clip_score": mean_or_none(self.clip[idx])}
        for role in ROLES:
            sub = idx[self.roles[idx] == role]
            out[f"clip_score_{role}"] = mean_or_none(self.clip[sub])
            out[f"zero_shot_{role}"] = mean_or_none(self.correct[sub])
        if self.flagged is not None:
            out["nudity_images"] = int(self.flagged[idx].sum())
            out["nudity_fraction"] = float(self.flagged[idx].mean()) if len(idx) else None
        return out


@dataclass
class ClipReading:
    """What CLIP read off the images: scores, image embeddings, zero-shot classes and predictions."""

    scores: np.ndarray
    features: torch.Tensor
    classes: list[str]
    predictions: list[str | None]
    correct: np.ndarray  # 1 / 0 per image, NaN without a concept or with < 2 classes
    seconds: float


@dataclass
class QualitySetup:
    """The reference images and the features FID / KID are computed on (None without a reference folder)."""

    folder: Path
    references: list[Path]
    extractor: FeatureExtractor


def scheduler_settings(backbone) -> dict:
    """The sampler: class name and config (JSON-safe) of ``backbone.pipe.scheduler``."""
    scheduler = getattr(getattr(backbone, "pipe", None), "scheduler", None)
    if scheduler is None:
        return {"class": None, "config": None}
    config = json.loads(json.dumps(dict(getattr(scheduler, "config", {})), default=str))
    return {"class": type(scheduler).__name__, "config": config}


def sd_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    return library_versions() | library_versions(("torchmetrics", "pillow", *extra), python=False)


def quality_setup(
    clip: LocalCLIP, reference_dir: str | Path | None, inception_weights: str | Path | None
) -> QualitySetup | None:
    """Checked before generation starts: the reference folder's images and the FID / KID features."""
    if reference_dir is None:
        return None
    references = reference_paths(reference_dir)
    extractor = InceptionFeatures(inception_weights, clip.device) if inception_weights else ClipImageFeatures(clip)
    return QualitySetup(Path(reference_dir).expanduser().resolve(), references, extractor)


def read_with_clip(clip: LocalCLIP, generated: Generated, rows: list[PromptRow], template: str) -> ClipReading:
    """CLIP scores of the images against their prompts, and zero-shot among the prompt set's concepts."""
    started = time.time()
    image_rows = generated.rows
    scores = clip.clip_scores(generated.images, [r.prompt for r in image_rows])
    classes = zero_shot_classes(rows)
    features = clip.embed_images(generated.images)
    correct = np.full(len(image_rows), np.nan)
    predictions: list[str | None] = [None] * len(image_rows)
    if len(classes) >= 2:
        predicted, _ = zero_shot(clip, features, classes, template)
        for i, r in enumerate(image_rows):
            predictions[i] = classes[predicted[i]]
            if r.concept:
                correct[i] = float(predictions[i] == r.concept)
    return ClipReading(scores, features, classes, predictions, correct, time.time() - started)


def measure_quality(
    setup: QualitySetup, reading: ClipReading, generated: Generated, batch_size: int, seed: int
) -> dict:
    """FID / KID of the preserve images against the reference folder, with what they were computed on."""
    preserve = np.array([i for i, r in enumerate(generated.rows) if r.role == "preserve"], dtype=int)
    if isinstance(setup.extractor, ClipImageFeatures):  # the CLIP features of the generated images are there
        fake = reading.features[preserve].double().cpu()
    else:
        fake = extract_features(setup.extractor, array_batches(generated.images[preserve], batch_size))
    real = extract_features(setup.extractor, path_batches(setup.references, batch_size))
    return {
        "reference": str(setup.folder),
        "reference_images": len(setup.references),
        "generated_images": int(len(preserve)),
        "images_role": "preserve",
        **setup.extractor.info,
        **fid_kid(fake, real, seed=seed),
    }


def image_records(generated: Generated, seeds: list[int], reading: ClipReading, counts: list | None) -> list[dict]:
    """One entry per image: its file, prompt row, seed, CLIP score, zero-shot reading and NudeNet counts."""
    images = []
    for i, (r, name) in enumerate(zip(generated.rows, generated.names, strict=True)):
        entry = {
            "file": name,
            "prompt": r.prompt,
            "case_number": r.case_number,
            "seed": int(seeds[i]),
            "concept": r.concept,
            "role": r.role,
            "group": r.group,
            "clip_score": float(reading.scores[i]),
            "zero_shot_prediction": reading.predictions[i],
        }
        if counts is not None:
            entry["nudenet"] = {c: n for c, n in counts[i].items() if n}
        images.append(entry)
    return images


def summaries(per_image: _PerImage, rows: list[PromptRow]) -> dict:
    """The roles', groups' and concepts' summaries."""
    groups, concepts = defaultdict(list), defaultdict(list)
    for i, r in enumerate(rows):
        groups[r.group].append(i)
        concepts[(r.concept, r.role)].append(i)
    return {
        "roles": {
            role: per_image.summary(np.flatnonzero(per_image.roles == role))
            for role in ROLES
            if (per_image.roles == role).any()
        },
        "groups": {g: per_image.summary(np.array(idx)) for g, idx in sorted(groups.items())},
        "concepts": [
            {"concept": c, "role": role, **per_image.summary(np.array(idx))}
            for (c, role), idx in sorted(concepts.items())
        ],
    }


def settings_record(
    settings: EvalSettings, rows: list[PromptRow], backbone, edit: Artifact | None, clip: LocalCLIP, template: str
) -> dict:
    """The knobs of the run (the quality and NudeNet ones are added by the caller)."""
    classes = zero_shot_classes(rows)
    return {
        **{k: v for k, v in asdict(settings).items() if k != "min_reference_images"},  # a ShapeWorld knob
        "seeds": {"rule": "evaluation_seed + k", "evaluation_seeds": sorted({r.evaluation_seed for r in rows})},
        "scheduler": scheduler_settings(backbone),
        **sampling_record(backbone),
        "backbone": backbone.identity(),
        "edit": {"method": edit.method, "concepts": edit.concepts} if edit is not None else None,
        "clip": {
            **clip.describe(),
            "device": str(clip.device),
            "clip_score": "torchmetrics clip_score: max(100 cos(image, prompt), 0)",
            "template": template,
            "classes": classes,
            "zero_shot": "argmax cosine over the classes"
            if len(classes) >= 2
            else "not computed: the prompt set names fewer than 2 concepts",
        },
    }


def evaluate_sd(
    backbone,
    rows: list[PromptRow],
    settings: EvalSettings,
    clip_dir: str | Path,
    reference_dir: str | Path | None = None,
    nudenet: NudeNetCounter | None = None,
    edit: Artifact | None = None,
    template: str = DEFAULT_TEMPLATE,
    inception_weights: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> tuple[dict, Generated]:
    """Generate with ``edit`` applied (removed again afterwards) and measure; returns (metrics, images).

    Every input is checked before generation starts. The caller saves images as {case_number}_{k}.png
    (``Generated.names``)."""
    t0 = time.time()
    settings = settings.resolved(backbone)
    check_template(template)
    if inception_weights is not None and reference_dir is None:
        raise UserError("--inception-weights needs --reference DIR (FID/KID compare against a reference folder)")
    clip = LocalCLIP(clip_dir, device)
    setup = quality_setup(clip, reference_dir, inception_weights)
    generated, t_gen = generate_edited(backbone, rows, settings, edit, progress)
    _, seeds, _ = expand_rows(rows, settings.num_images)
    reading = read_with_clip(clip, generated, rows, template)
    t3 = time.time()
    quality = measure_quality(setup, reading, generated, clip.batch_size, settings.reference_seed) if setup else None
    t_quality, t4 = time.time() - t3, time.time()
    counts = nudenet(generated.images) if nudenet is not None else None
    t_nudenet = time.time() - t4
    flagged = np.array([float(any(c.values())) for c in counts]) if counts is not None else None
    per_image = _PerImage(np.array([r.role for r in generated.rows]), reading.scores, reading.correct, flagged)
    overall = per_image.summary(np.arange(len(generated.rows)))
    overall.update({k: quality[k] if quality else None for k in ("fid", "kid", "kid_std")})
    if counts is not None:
        overall["nudenet_detections"] = {c: int(sum(n[c] for n in counts)) for c in nudenet.classes}
    record = settings_record(settings, rows, backbone, edit, clip, template)
    record["quality"] = quality and {k: v for k, v in quality.items() if k not in ("fid", "kid", "kid_std")}
    record["nudenet"] = nudenet.settings() if nudenet is not None else None
    timings = {
        "generate_seconds": round(t_gen, 2),
        "clip_seconds": round(reading.seconds, 2),
        "quality_seconds": round(t_quality, 2),
        "nudenet_seconds": round(t_nudenet, 2),
        "images": len(generated.images),
        "images_per_second": round(len(generated.images) / max(t_gen, 1e-9), 2),
    }
    extra = ("nudenet",) * (nudenet is not None) + ("torch-fidelity",) * (inception_weights is not None)
    metrics = {"protocol": PROTOCOL, "settings": record, "overall": overall, **summaries(per_image, generated.rows)}
    metrics |= {"images": image_records(generated, seeds, reading, counts), "timings": timings}
    metrics["timings"]["total_seconds"] = round(time.time() - t0, 2)
    metrics["versions"] = sd_versions(extra)
    return metrics, generated


class StableDiffusionProtocol:
    """The Stable Diffusion protocol as an ``EvaluationProtocol`` (backbones/world.py): CLIP score and zero-shot,
    FID / KID against a reference folder, NudeNet counts; its judge of attack images is CLIP zero-shot."""

    name = PROTOCOL["name"]

    def __init__(
        self,
        clip_dir: str | Path,
        reference_dir: str | Path | None = None,
        nudenet: NudeNetCounter | None = None,
        template: str = DEFAULT_TEMPLATE,
        inception_weights: str | Path | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.clip_dir, self.reference_dir, self.nudenet = clip_dir, reference_dir, nudenet
        self.template, self.inception_weights, self.device = template, inception_weights, device

    def evaluate(
        self,
        backbone,
        rows: list[PromptRow],
        settings: EvalSettings,
        edit: Artifact | None = None,
        base: Generated | None = None,
        progress: bool = True,
    ) -> tuple[dict, Generated, None]:
        """(metrics, images, None): the protocol compares with no original model (``base`` is not used)."""
        options = {"reference_dir": self.reference_dir, "nudenet": self.nudenet, "template": self.template}
        options |= {"inception_weights": self.inception_weights, "device": self.device}
        metrics, generated = evaluate_sd(
            backbone, rows, settings, self.clip_dir, edit=edit, progress=progress, **options
        )
        return metrics, generated, None

    def judge(self, rows: list[PromptRow] | None = None) -> ClipJudge:
        return ClipJudge(LocalCLIP(self.clip_dir, self.device), zero_shot_classes(rows or []), self.template)

    def report(self, metrics: dict, generated: Generated, extra: str = "") -> str:
        return render_sd_report(metrics, generated, extra=extra)

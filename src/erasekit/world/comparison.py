"""Compare erasure methods on a ShapeWorld task: one original generation, then per method erase (timed, peak
memory), evaluate with the edit, and collect one table row (eval/comparison.py); and the header every ShapeWorld
benchmark record carries (benchmarks/)."""

from __future__ import annotations

import json
import platform
import re
import shlex
import time
from dataclasses import asdict, replace

from erasekit.artifacts import Artifact
from erasekit.backbones.base import Backbone
from erasekit.eval.comparison import MethodRun, erase_with, table_row, task_concepts
from erasekit.eval.generation import EvalSettings, Generated, generate_rows
from erasekit.eval.prompts import PromptRow
from erasekit.world.assets import denoiser_dir
from erasekit.world.classifier import FactorClassifier
from erasekit.world.denoiser import SAMPLING_GUIDANCE, SAMPLING_STEPS
from erasekit.world.protocol import evaluate
from erasekit.world.tasks import ErasureTask

DEFAULT_RUNS = (
    MethodRun("UCE", "uce", {}),
    MethodRun("ErasePro", "erasepro", {}),
    MethodRun("ErasePro --no-progressive", "erasepro", {"progressive": False}),
)


def compare(
    backbone: Backbone,
    task: ErasureTask,
    rows: list[PromptRow],
    classifier: FactorClassifier,
    settings: EvalSettings,
    runs: tuple[MethodRun, ...] = DEFAULT_RUNS,
) -> tuple[list[dict], dict[str, Artifact], dict[str, Generated]]:
    """(table rows: the original then each method; artifacts by label; images by label)."""
    concepts = task_concepts(task)
    original = generate_rows(backbone, rows, settings)
    metrics, _, _ = evaluate(backbone, rows, classifier, settings, base=original)
    table, artifacts, images = [table_row("original", metrics, None)], {}, {"original": original}
    floor_rows = anchor_rows(task, rows)
    floor, _, _ = evaluate(backbone, floor_rows, classifier, settings, progress=False)
    table.append(
        {
            "method": "anchor prompts (floor)",
            **{k: v for k, v in table_row("", floor, None).items() if k.startswith("acc_e")},
        }
    )
    for run in runs:
        artifact = erase_with(backbone, concepts, run)
        metrics, edited, _ = evaluate(backbone, rows, classifier, settings, edit=artifact, base=original)
        table.append(table_row(run.label, metrics, artifact))
        artifacts[run.label], images[run.label] = artifact, edited
    return table, artifacts, images


def anchor_rows(task: ErasureTask, rows: list[PromptRow]) -> list[PromptRow]:
    """The explicit target prompts with every phrasing of the target replaced by the anchor, scored as
    targets: how often the *original* model draws the target anyway — the floor an anchor-based Acc_e
    can reach (e.g. a random shape is sometimes a star)."""
    words = sorted(task.forbidden_words(), key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    out = []
    for r in rows:
        if r.role == "target" and pattern.search(r.prompt):
            prompt = re.sub(r"\s+", " ", pattern.sub(task.anchor, r.prompt)).strip() or "a picture"
            out.append(replace(r, prompt=prompt))
    return out


def benchmark_record(script: str, argv: list[str], settings, started: float, **results) -> dict:
    """The header every benchmark JSON carries: the command that regenerates it, the settings, the machine,
    the wall time; then the results."""
    training = json.loads((denoiser_dir() / "training.json").read_text())
    return {
        "command": shlex.join(["python", script, *argv]),  # quoted: JSON options paste back into a shell
        "denoiser_steps": training["steps"],  # which shipped ShapeWorld model the figures are of
        "settings": asdict(settings.with_defaults(SAMPLING_STEPS, SAMPLING_GUIDANCE)),
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "seconds": round(time.time() - started, 1),
        **results,
    }

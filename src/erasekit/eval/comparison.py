"""Comparison tables of erasure methods (specs/evaluation.md): a method run's edit, one table row per evaluated
edit (Acc_e per held-out phrasing group, Acc_s, H, SW-FID, edit time and memory), the per-stage plot, and the
Markdown and JSON files a benchmark writes. ShapeWorld's task comparison (world/comparison.py) builds on them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from erasekit.artifacts import Artifact
from erasekit.backbones.base import Backbone
from erasekit.backbones.world import Task
from erasekit.concepts.pairs import ConceptSet
from erasekit.eval.metrics import harmonic_mean
from erasekit.eval.prompts import EVOKING_GROUPS, PHRASING_GROUPS
from erasekit.eval.report import plot_text
from erasekit.methods.base import erase_to_artifact

TARGET_GROUPS = (*PHRASING_GROUPS, *EVOKING_GROUPS)
NEIGHBOUR = "neighbour"  # the neighbour groups are "neighbour" or "neighbour-<phrasing>"


@dataclass(frozen=True)
class MethodRun:
    label: str  # as shown in tables, e.g. the method's label and the option that sets this run apart
    method: str
    options: dict


def task_concepts(task: Task) -> ConceptSet:
    """A task's concept set for a method that maps its targets onto an anchor and preserves the rest."""
    templates = list(task.templates) if task.templates else None
    return ConceptSet.build(list(task.targets), task.anchor, list(task.preserve), task.kind, templates)


def erase_with(backbone: Backbone, concepts: ConceptSet, run: MethodRun) -> Artifact:
    return erase_to_artifact(backbone, concepts, run.method, run.options)


def table_row(label: str, metrics: dict, artifact: Artifact | None) -> dict:
    """The comparison columns of one evaluated edit (or of the original model when artifact is None)."""
    groups, overall = metrics["groups"], metrics["overall"]
    row: dict = {"method": label}
    for g in TARGET_GROUPS:
        row[f"acc_e_{g}"] = groups[g]["acc_e"] if g in groups else None
    row["acc_e"] = overall["acc_e"]
    row["acc_s"] = overall["acc_s"]
    row["acc_s_neighbour"], row["acc_s_neighbour_relative"] = neighbour_accuracy(groups)
    row["acc_s_relative"] = overall.get("acc_s_relative", 1.0 if artifact is None else None)
    row["h"] = overall.get("h")
    # H with Acc_s relative to the original: the erasure's own cost, not the base model's agreement ceiling
    relative = row["acc_s_relative"]
    row["h_relative"] = harmonic_mean(row["acc_e"], min(1.0, relative)) if relative is not None else None
    row["sw_fid"] = overall.get("sw_fid")
    row["fidelity"] = overall.get("fidelity", 0.0 if artifact is None else None)
    row["edit_seconds"] = artifact.metrics["seconds"] if artifact else None
    row["peak_mib"] = artifact.metrics["peak_mib"] if artifact else None
    return row


def neighbour_accuracy(groups: dict[str, dict]) -> tuple[float | None, float | None]:
    """Acc_s over every neighbour group's images (each phrasing its own group), and relative to the original's."""
    parts = [v for g, v in groups.items() if g.split("-")[0] == NEIGHBOUR and v.get("acc_s") is not None]
    if not parts:
        return None, None
    images = sum(v["images"] for v in parts)
    acc_s = sum(v["acc_s"] * v["images"] for v in parts) / images
    if any(v.get("acc_s_original") is None for v in parts):
        return acc_s, None
    original = sum(v["acc_s_original"] * v["images"] for v in parts) / images
    return acc_s, (acc_s / original if original else None)


def stage_plot(stages_by_label: dict[str, list[dict]]) -> bytes:
    """PNG: per stage, the gap ||Y - X||/||Y|| it saw and the change ||dW||/||W|| it made (labels as literal text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, stages in stages_by_label.items():
        names = [plot_text(s["stage"].replace("text layer ", "L")) for s in stages]
        for ax, key in zip(axes, ("gap", "delta"), strict=True):
            ax.plot(names, [s[key] for s in stages], marker="o", label=plot_text(label))
    for ax, title in zip(axes, ("gap ‖Y−X‖/‖Y‖ before the stage", "change ‖ΔW‖/‖W‖"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def markdown_table(rows: list[dict]) -> str:
    columns = [c for c in rows[0] if any(r.get(c) is not None for r in rows)]

    def cell(value) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def save_benchmark(
    folder: Path, stem: str, record: dict, markdown: str, figures: dict[str, bytes] | None = None
) -> None:
    """Write a benchmark's ``stem``.json (the record), its figures (name -> PNG bytes) and ``stem``.md into
    ``folder``, each through a temporary file: an interrupted run leaves the previous docs whole."""
    from erasekit.utils.io import atomic_file, json_text

    text = json_text(record)  # before any file is touched: a record that fails writes nothing
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / f"{stem}.json") as handle:
        handle.write(text)
    for name, data in (figures or {}).items():
        with atomic_file(folder / name, "wb") as handle:
            handle.write(data)
    with atomic_file(folder / f"{stem}.md") as handle:
        handle.write(markdown.rstrip("\n") + "\n")

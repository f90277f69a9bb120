"""erasekit demo: the main job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli.common import (
    Device,
    Dtype,
    Overwrite,
    app,
    check_out,
    console,
    load_model,
    on_main,
    summary_table,
)
from erasekit.cli.tables import edit_html
from erasekit.utils.io import json_text

DEMO_MODEL, DEMO_TASK = "shapeworld", "instance"  # the demo erases the instance task's 'star' from ShapeWorld


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/demo"),
    per_group: Annotated[int, typer.Option(min=1, help="prompts per prompt group of the task")] = 16,
    device: Device = "auto",
    dtype: Dtype = "auto",
    overwrite: Overwrite = False,
) -> None:
    """The main job: erase 'star' from ShapeWorld with ErasePro, evaluate before/after, write a report."""
    from erasekit.artifacts import save_artifact
    from erasekit.backbones.loader import default_world
    from erasekit.eval.comparison import MethodRun, erase_with, task_concepts
    from erasekit.eval.generation import EvalSettings
    from erasekit.eval.prompts import first_per_group
    from erasekit.eval.protocols import protocol_for
    from erasekit.eval.report import render_report
    from erasekit.utils.io import atomic_dir

    check_out(out, overwrite)
    t0 = time.time()
    task = default_world().tasks()[DEMO_TASK]  # the embedded world: DEMO_MODEL's
    rows = first_per_group(task.rows(), per_group)
    backbone = load_model(DEMO_MODEL, device=device, dtype=dtype)
    artifact = erase_with(backbone, task_concepts(task), MethodRun("ErasePro", "erasepro", {}))
    protocol = protocol_for(backbone)
    metrics, edited, original = protocol.evaluate(backbone, rows, EvalSettings(), edit=artifact)
    stages = artifact.metrics["stages"]
    grids = []
    for role, title in (("target", "target prompts (star)"), ("preserve", "neighbour and other prompts")):
        idx = [i for i, r in enumerate(edited.rows) if r.role == role][:32]
        captions = [edited.rows[i].prompt for i in idx]
        grids += [
            (f"{title} — original", original.images[idx], captions),
            (f"{title} — ErasePro", edited.images[idx], captions),
        ]
    if not on_main():
        return
    with atomic_dir(out, overwrite) as tmp:
        save_artifact(artifact, tmp / "edit")
        (tmp / "metrics.json").write_text(json_text(metrics))
        report = render_report(metrics, grids, "erasekit demo: erase 'star' with ErasePro", edit_html(artifact))
        (tmp / "report.html").write_text(report)
    o, before = metrics["overall"], metrics["overall"]["original"]
    console.print(
        summary_table(
            "erasekit demo — erase 'star' from ShapeWorld (ErasePro)",
            [
                ("Acc_e (star prompts still show a star)", f"{before['acc_e']:.3f} → {o['acc_e']:.3f}"),
                ("Acc_s (other prompts show what they ask)", f"{before['acc_s']:.3f} → {o['acc_s']:.3f}"),
                ("Acc_s relative to the original", f"{o['acc_s_relative']:.3f}"),
                ("H", f"{o['h']:.3f}"),
                ("fidelity (mean pixel distance, preserve)", f"{o['fidelity']:.4f}"),
                ("edit seconds", f"{artifact.metrics['seconds']:.2f}"),
                ("projector residual", f"{stages[-1]['residual']:.1e}"),
                ("report", str(out / "report.html")),
                ("artifact", str(out / "edit")),
                ("total seconds", f"{time.time() - t0:.1f}"),
            ],
        )
    )

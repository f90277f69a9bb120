"""erasekit evaluate: the ShapeWorld protocol, or on a diffusers model the Stable Diffusion protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli.common import (
    COMPILE_HELP,
    EVAL_MODEL_HELP,
    INCEPTION_HELP,
    Overwrite,
    app,
    check_out,
    console,
    load_edit,
    load_model,
    on_main,
    save_images,
    shipped_classifier,
)
from erasekit.cli.tables import edit_html, group_table, print_metrics
from erasekit.errors import UserError
from erasekit.utils.io import json_text


@app.command()
def evaluate(
    prompts: Annotated[Path, typer.Option(help="prompt CSV (specs/evaluation.md)")],
    out: Annotated[Path, typer.Option(help="output folder: metrics.json, report.html, images/")],
    model: Annotated[str, typer.Option(help=EVAL_MODEL_HELP)] = "shapeworld",
    edit: Annotated[Path | None, typer.Option(help="edit artifact folder")] = None,
    num_images: Annotated[int, typer.Option(min=1, help="images per prompt")] = 1,
    steps: Annotated[int, typer.Option(min=1)] = 25,
    guidance: Annotated[float, typer.Option()] = 5.0,
    compile_denoiser: Annotated[bool, typer.Option("--compile", help=COMPILE_HELP)] = False,
    clip: Annotated[Path | None, typer.Option(help="local CLIP folder (SD protocol, required there)")] = None,
    reference: Annotated[Path | None, typer.Option(help="reference image folder for FID / KID (SD protocol)")] = None,
    inception_weights: Annotated[Path | None, typer.Option(help=INCEPTION_HELP)] = None,
    zero_shot_template: Annotated[str, typer.Option(help="CLIP zero-shot text (SD protocol)")] = "a photo of {concept}",
    nudenet: Annotated[bool, typer.Option("--nudenet", help="count NudeNet detections (pip install nudenet)")] = False,
    nudenet_threshold: Annotated[float | None, typer.Option(help="NudeNet score threshold (default 0.6)")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Run the ShapeWorld protocol (or, on a diffusers model, the Stable Diffusion protocol); write
    metrics.json, images/ and report.html."""
    from erasekit.eval.generation import EvalSettings
    from erasekit.eval.prompts import load_prompts
    from erasekit.eval.report import render_report
    from erasekit.utils.io import atomic_dir
    from erasekit.world.protocol import evaluate as run_protocol

    sd_options = clip or reference or inception_weights or nudenet or nudenet_threshold is not None
    if model == "shapeworld" and sd_options:
        raise UserError("--clip, --reference, --inception-weights, --nudenet*: diffusers models only, not shapeworld")
    if model != "shapeworld" and clip is None:
        raise UserError("the Stable Diffusion protocol needs a local CLIP folder: --clip DIR")
    if nudenet_threshold is not None and not nudenet:
        raise UserError("--nudenet-threshold applies with --nudenet")
    check_out(out, overwrite, model, prompts, edit, clip, reference, inception_weights)
    settings = EvalSettings(num_images=num_images, steps=steps, guidance=guidance)
    artifact = load_edit(edit)
    rows = load_prompts(prompts, require_concepts=model == "shapeworld")
    backbone = load_model(model, compile_denoiser)
    if artifact is not None:  # an edit is judged on prompts it never fitted (an in-sample figure is not erasure)
        from erasekit.methods.base import check_edit_heldout

        check_edit_heldout(backbone, artifact, [r.prompt for r in rows])
    if backbone.family != "shapeworld":
        options = {"reference_dir": reference, "inception_weights": inception_weights, "template": zero_shot_template}
        sd_run = (clip, nudenet, nudenet_threshold, overwrite)
        _evaluate_sd(backbone, rows, prompts, out, artifact, settings, sd_run, options)
        return
    metrics, edited, _ = run_protocol(backbone, rows, shipped_classifier(), settings, edit=artifact)
    metrics["settings"]["prompts"] = str(prompts)
    if not on_main():
        return
    grids = []
    for group in metrics["groups"]:
        idx = [i for i, r in enumerate(edited.rows) if r.group == group]
        grids.append((f"group: {group}", edited.images[idx], [edited.rows[i].prompt for i in idx]))
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "images").mkdir()
        save_images(tmp / "images", edited.images, edited.names)
        (tmp / "metrics.json").write_text(json_text(metrics))
        (tmp / "report.html").write_text(render_report(metrics, grids, extra=edit_html(artifact)))
    print_metrics(metrics, out)


def _evaluate_sd(backbone, rows, prompts, out, artifact, settings, sd_run, options) -> None:
    """The Stable Diffusion protocol (eval/sd_protocol.py): metrics.json, images/, report.html; ``sd_run`` is
    (clip, nudenet, nudenet_threshold, overwrite); ``options`` go to ``evaluate_sd`` (reference_dir,
    inception_weights, template)."""
    from dataclasses import replace

    from erasekit.eval.report import fmt
    from erasekit.eval.sd.nudenet import DEFAULT_NUDENET_THRESHOLD, NudeNetCounter
    from erasekit.eval.sd.protocol import evaluate_sd
    from erasekit.eval.sd.report import render_sd_report
    from erasekit.utils.io import atomic_dir

    clip, nudenet, nudenet_threshold, overwrite = sd_run
    threshold = DEFAULT_NUDENET_THRESHOLD if nudenet_threshold is None else nudenet_threshold
    counter = NudeNetCounter.load(threshold) if nudenet else None
    settings = replace(settings, batch_size=getattr(backbone, "default_batch_size", settings.batch_size))
    metrics, generated = evaluate_sd(backbone, rows, settings, clip, nudenet=counter, edit=artifact, **options)
    metrics["settings"]["prompts"] = str(prompts)
    if not on_main():
        return
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "images").mkdir()
        save_images(tmp / "images", generated.images, generated.names)
        (tmp / "metrics.json").write_text(json_text(metrics))
        (tmp / "report.html").write_text(render_sd_report(metrics, generated, extra=edit_html(artifact)))
    keys = ("images", "clip_score", "zero_shot_target", "zero_shot_preserve", "nudity_images")
    console.print(group_table(f"evaluation (Stable Diffusion) → {out}", metrics, keys))
    quality = metrics["settings"]["quality"]
    o, speed = metrics["overall"], metrics["timings"]["images_per_second"]
    features = f"on {quality['features']} features" if quality else "(no --reference)"
    console.print(f"FID {fmt(o['fid'])}  KID {fmt(o['kid'])} {features}  ({speed} images/s)")

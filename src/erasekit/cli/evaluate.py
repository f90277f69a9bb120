"""erasekit evaluate: the ShapeWorld protocol, or on a diffusers model the Stable Diffusion protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from erasekit.backbones.world import World, world_of
from erasekit.cli.common import (
    COMPILE_HELP,
    EVAL_MODEL_HELP,
    INCEPTION_HELP,
    ZERO_SHOT_HELP,
    Device,
    Dtype,
    Guidance,
    Memory,
    Overwrite,
    Steps,
    WithoutT5,
    app,
    check_out,
    console,
    load_edit,
    load_model,
    on_main,
    sampling_text,
    save_images,
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
    steps: Steps = None,
    guidance: Guidance = None,
    compile_denoiser: Annotated[bool, typer.Option("--compile", help=COMPILE_HELP)] = False,
    clip: Annotated[Path | None, typer.Option(help="local CLIP folder (SD protocol, required there)")] = None,
    reference: Annotated[Path | None, typer.Option(help="reference image folder for FID / KID (SD protocol)")] = None,
    inception_weights: Annotated[Path | None, typer.Option(help=INCEPTION_HELP)] = None,
    zero_shot_template: Annotated[str | None, typer.Option(help=ZERO_SHOT_HELP, show_default=False)] = None,
    nudenet: Annotated[bool, typer.Option("--nudenet", help="count NudeNet detections (pip install nudenet)")] = False,
    nudenet_threshold: Annotated[float | None, typer.Option(help="NudeNet score threshold (default 0.6)")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    memory: Memory = None,
    without_t5: WithoutT5 = False,
    overwrite: Overwrite = False,
) -> None:
    """Run the ShapeWorld protocol (or, on a diffusers model, the Stable Diffusion protocol); write
    metrics.json, images/ and report.html."""
    from dataclasses import replace

    from erasekit.backbones.loader import world_for
    from erasekit.eval.generation import EvalSettings
    from erasekit.eval.prompts import load_prompts
    from erasekit.utils.io import atomic_dir

    world = world_for(model)
    sd_options = {"reference_dir": reference, "inception_weights": inception_weights, "template": zero_shot_template}
    _check_protocol_options(world, clip, sd_options, nudenet, nudenet_threshold)
    check_out(out, overwrite, model, prompts, edit, clip, reference, inception_weights)
    settings = EvalSettings(num_images=num_images, steps=steps, guidance=guidance)
    artifact = load_edit(edit)
    rows = load_prompts(prompts, require_concepts=world is not None, world=world)
    backbone = load_model(model, compile_denoiser, device, dtype, memory, without_t5)
    if artifact is not None:  # an edit is judged on prompts it never fitted (an in-sample figure is not erasure)
        from erasekit.methods.base import check_edit_heldout

        check_edit_heldout(backbone, artifact, [r.prompt for r in rows])
    protocol = _protocol(backbone, clip, sd_options, nudenet, nudenet_threshold)
    settings = replace(settings, batch_size=getattr(backbone, "default_batch_size", settings.batch_size))
    metrics, generated, _ = protocol.evaluate(backbone, rows, settings, edit=artifact)
    metrics["settings"]["prompts"] = str(prompts)
    if not on_main():
        return
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "images").mkdir()
        save_images(tmp / "images", generated.images, generated.names)
        (tmp / "metrics.json").write_text(json_text(metrics))
        (tmp / "report.html").write_text(protocol.report(metrics, generated, edit_html(artifact)))
    if world_of(backbone) is None:
        _print_sd_metrics(metrics, out)
    else:
        print_metrics(metrics, out)
    console.print(f"sampling: {sampling_text(backbone, settings.resolved(backbone))}")


def _check_protocol_options(
    world: World | None, clip: Path | None, sd_options: dict, nudenet: bool, nudenet_threshold: float | None
) -> None:
    """The Stable Diffusion protocol's options only on a model without a world of its own, and --clip always
    there: refused before any work."""
    given = clip or sd_options["reference_dir"] or sd_options["inception_weights"] or nudenet
    given = given or sd_options["template"] is not None
    if world is not None and (given or nudenet_threshold is not None):
        raise UserError(
            f"--clip, --reference, --inception-weights, --zero-shot-template, --nudenet*: diffusers models only, "
            f"not {world.name}"
        )
    if world is None and clip is None:
        raise UserError("the Stable Diffusion protocol needs a local CLIP folder: --clip DIR")
    if nudenet_threshold is not None and not nudenet:
        raise UserError("--nudenet-threshold applies with --nudenet")


def _protocol(backbone, clip: Path | None, sd_options: dict, nudenet: bool, nudenet_threshold: float | None):
    """The protocol that judges ``backbone``: its world's, else the Stable Diffusion protocol with CLIP from
    ``clip``, ``sd_options`` and a NudeNet counter (loaded here) with ``--nudenet``."""
    from erasekit.eval.protocols import protocol_for

    if world_of(backbone) is not None:
        return protocol_for(backbone)
    from erasekit.eval.sd.nudenet import DEFAULT_NUDENET_THRESHOLD, NudeNetCounter

    threshold = DEFAULT_NUDENET_THRESHOLD if nudenet_threshold is None else nudenet_threshold
    counter = NudeNetCounter.load(threshold) if nudenet else None
    return protocol_for(backbone, clip, nudenet=counter, **{k: v for k, v in sd_options.items() if v is not None})


def _print_sd_metrics(metrics: dict, out: Path) -> None:
    """The Stable Diffusion protocol's group table and its FID / KID line."""
    from erasekit.eval.report import fmt

    keys = ("images", "clip_score", "zero_shot_target", "zero_shot_preserve", "nudity_images")
    console.print(group_table(f"evaluation (Stable Diffusion) → {out}", metrics, keys))
    quality = metrics["settings"]["quality"]
    o, speed = metrics["overall"], metrics["timings"]["images_per_second"]
    features = f"on {quality['features']} features" if quality else "(no --reference)"
    console.print(f"FID {fmt(o['fid'])}  KID {fmt(o['kid'])} {features}  ({speed} images/s)")

"""erasekit generate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli.common import (
    COMPILE_HELP,
    MODEL_HELP,
    SEED_MAX,
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
    summary_table,
)
from erasekit.errors import UserError


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="output folder (written atomically)")],
    prompt: Annotated[str | None, typer.Option(help="one prompt")] = None,
    prompts: Annotated[Path | None, typer.Option(help="prompt CSV (specs/evaluation.md)")] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "shapeworld",
    edit: Annotated[Path | None, typer.Option(help="edit artifact folder")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed for --prompt (a CSV carries its own)")] = 0,
    num_images: Annotated[int, typer.Option(min=1, help="images per prompt")] = 4,
    steps: Steps = None,
    guidance: Guidance = None,
    compile_denoiser: Annotated[bool, typer.Option("--compile", help=COMPILE_HELP)] = False,
    device: Device = "auto",
    dtype: Dtype = "auto",
    memory: Memory = None,
    without_t5: WithoutT5 = False,
    overwrite: Overwrite = False,
) -> None:
    """Generate images: {case_number}_{k}.png per prompt, plus grid.png."""
    from erasekit.eval.generation import EvalSettings, generate_rows
    from erasekit.eval.grids import image_grid
    from erasekit.eval.prompts import PromptRow, load_prompts
    from erasekit.utils.io import atomic_dir

    if (prompt is None) == (prompts is None):
        raise UserError("give exactly one of --prompt TEXT or --prompts CSV")
    check_out(out, overwrite, model, prompts, edit)
    settings = EvalSettings(num_images=num_images, steps=steps, guidance=guidance)
    artifact = load_edit(edit)
    if prompt is not None and not prompt.strip():
        raise UserError("--prompt is empty")
    rows = (
        load_prompts(prompts, require_concepts=False)
        if prompts
        else [PromptRow(prompt.strip(), seed, 0, "", "preserve")]
    )
    backbone = load_model(model, compile_denoiser, device, dtype, memory, without_t5)
    settings = settings.resolved(backbone)
    if artifact is not None:
        from erasekit.artifacts import apply_artifact

        apply_artifact(backbone, artifact)
    t0 = time.time()
    result = generate_rows(backbone, rows, settings)
    seconds = time.time() - t0
    if not on_main():
        return
    with atomic_dir(out, overwrite) as tmp:
        save_images(tmp, result.images, result.names)
        image_grid(result.images[:64]).save(tmp / "grid.png")
    console.print(
        summary_table(
            "generate",
            [
                ("images", str(len(result.images))),
                ("seconds", f"{seconds:.1f}"),
                ("images/s", f"{len(result.images) / seconds:.2f}"),
                ("sampling", sampling_text(backbone, settings)),
                ("out", str(out)),
            ],
        )
    )

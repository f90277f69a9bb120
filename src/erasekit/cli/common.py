"""What every command shares: the app, its console, common options and loaders, summary tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from erasekit.errors import UserError

if TYPE_CHECKING:
    from erasekit.backbones.world import Task, World

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Erase concepts from text-to-image models.")


console = Console(stderr=True)

MODEL_HELP = "'shapeworld' (the embedded model) or a local diffusers folder (SD 1.x/2.x, SDXL, SD3)"

COMPILE_HELP = "sample through torch.compile: ~40 s once (cached after), then 1.1-1.5x faster (ShapeWorld only)"

ZERO_SHOT_HELP = "CLIP zero-shot text; diffusers models only (default: 'a photo of {concept}')"

EVAL_MODEL_HELP = "'shapeworld' (ShapeWorld protocol) or a local diffusers folder (Stable Diffusion protocol)"

INCEPTION_HELP = "torch-fidelity Inception weights file: FID / KID on Inception, not CLIP, features (SD protocol)"

SEED_MAX = 2**63 - 1  # seeds every generator takes without wrapping

Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace an --out that exists and is not empty")]

Steps = Annotated[
    int | None, typer.Option(min=1, help="sampling steps (default: the model's own, e.g. 50 on SD, 28 on SD3)")
]

Guidance = Annotated[float | None, typer.Option(help="guidance scale (default: the model's own, e.g. 7.5 on SD)")]

Memory = Annotated[
    list[str] | None,
    typer.Option(
        "--memory",
        help="diffusers memory switch (repeatable): attention-slicing | vae-tiling | cpu-offload (CUDA)",
        show_default=False,
    ),
]

WithoutT5 = Annotated[
    bool, typer.Option("--without-t5", help="SD3: load without the T5 encoder (an edit records which it had)")
]

Device = Annotated[
    str, typer.Option(help="auto | cpu | cuda | cuda:N | mps (auto: the GPU if there is one, else the CPU)")
]

Dtype = Annotated[
    str, typer.Option(help="auto | float32 | float16 | bfloat16 (auto: float16 or bfloat16 on a GPU, else float32)")
]


def check_out(out: Path, overwrite: bool, model: str | None = None, *inputs: Path | None) -> None:
    """Refuse an unusable --out before any work (utils/io.check_output); the model folder is an input too."""
    from erasekit.utils.io import check_output

    model_dir = Path(model) if model not in (None, "shapeworld") else None
    check_output(out, overwrite, (model_dir, *inputs))


def load_edit(edit: Path | None):
    import erasekit.methods  # noqa: F401  (registers the methods' artifact plug-ins, which loading needs)
    from erasekit.artifacts import load_artifact

    return load_artifact(edit) if edit is not None else None


def world_task(world: World | None, name: str) -> Task:
    """The task ``name`` of the model's world; a model without a world (a diffusers folder) has no tasks, and an
    unknown name is refused with the world's task names (one-line UserErrors, before any work)."""
    if world is None:
        raise UserError(f"--task {name}: a diffusers model has no tasks (tasks belong to a world, as shapeworld's)")
    tasks = world.tasks()
    if name not in tasks:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(tasks)}")
    return tasks[name]


def load_model(
    model: str,
    compile_denoiser: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    memory: list[str] | None = None,
    without_t5: bool = False,
):
    """The backbone of ``--model`` on ``--device`` in ``--dtype`` with ``--memory`` switches and ``--without-t5`` (a
    device this machine lacks, or a switch the model cannot take, is a UserError before the model loads)."""
    from erasekit.backbones.diffusers_common import PipelineOptions
    from erasekit.backbones.loader import load_backbone

    backbone = load_backbone(model, device, dtype, PipelineOptions(tuple(memory or ()), without_t5))
    if compile_denoiser:
        if not hasattr(backbone, "compile_denoiser"):
            raise UserError(f"--compile: only the shapeworld model supports it, not {backbone.family}")
        backbone.compile_denoiser()
    return backbone


def save_images(folder: Path, images: np.ndarray, names: list[str]) -> None:
    from PIL import Image

    for img, name in zip(images, names, strict=True):
        Image.fromarray(img).save(folder / name)


def on_main() -> bool:
    """Under ``accelerate launch`` every process computes its share; only the main one writes and prints."""
    from erasekit.utils.distributed import is_main

    return is_main()


def sampling_text(backbone, settings) -> str:
    """ "50 steps, guidance 7.5, 512x512, PNDMScheduler (epsilon) on cuda:0 float16": how the images were sampled
    (``settings`` resolved: the model's defaults where none were given) and where."""
    from dataclasses import replace

    used = replace(backbone.sampling_defaults(), steps=settings.steps, guidance=settings.guidance)
    dtype = str(getattr(backbone, "dtype", "?")).removeprefix("torch.")
    return f"{used.describe()} on {getattr(backbone, 'device', '?')} {dtype}"


def summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return table


def budget_options(items: list[str], attack: str | None = None) -> dict[str, dict]:
    """Parse repeated ``[ATTACK:]KEY=VALUE`` budget options into {attack: {key: value}}."""
    from erasekit.utils.options import parse_assignments

    form = "KEY=VALUE" if attack else "ATTACK:KEY=VALUE"
    budgets: dict[str, dict] = {}
    for head, value in parse_assignments(items, f"--budget (expected {form})").items():
        name, colon, key = head.rpartition(":")
        name = name if colon else attack
        if not key or name is None:
            raise UserError(f"--budget {head}={value}: expected {form}")
        budgets.setdefault(name, {})[key] = value
    return budgets

"""erasekit attack."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from erasekit.cli.common import (
    MODEL_HELP,
    SEED_MAX,
    ZERO_SHOT_HELP,
    Device,
    Dtype,
    Guidance,
    Memory,
    Overwrite,
    Steps,
    WithoutT5,
    app,
    budget_options,
    check_out,
    console,
    load_edit,
    load_model,
    on_main,
    sampling_text,
    save_images,
    summary_table,
    world_task,
)
from erasekit.errors import UserError
from erasekit.utils.io import json_text

if TYPE_CHECKING:
    from erasekit.backbones.world import Task, World


def _attack_rows(world: World | None, task: Task | None, prompts: Path | None) -> tuple[list, list]:
    """(target rows, preserve rows) of a task of the model's world or of a prompt CSV (free concept names on a
    model without a world of its own)."""
    from erasekit.eval.prompts import load_prompts

    rows = load_prompts(prompts, require_concepts=world is not None, world=world) if task is None else task.rows()
    targets = [r for r in rows if r.role == "target"]
    if not targets:
        raise UserError("the prompt set has no target rows to attack")
    return targets, [r for r in rows if r.role == "preserve"]


def _attacked_task(world: World | None, task: str | None, prompts: Path | None) -> Task | None:
    """The task whose target prompts are attacked (None: a prompt CSV's are); exactly one of the two is given."""
    if (task is None) == (prompts is None):
        raise UserError("give exactly one of --task NAME or --prompts CSV")
    return world_task(world, task) if task is not None else None


@app.command()
def attack(
    out: Annotated[Path, typer.Option(help="output folder: attack.json, prompts.csv, images/, grid.png (atomic)")],
    attack: Annotated[str, typer.Option(help="module-removal | paraphrase | ring-a-bell | soft-prompt | inversion")],
    edit: Annotated[Path | None, typer.Option(help="edit artifact folder (omit: attack the original model)")] = None,
    task: Annotated[
        str | None, typer.Option(help="a task of the model's world whose target prompts are attacked")
    ] = None,
    prompts: Annotated[Path | None, typer.Option(help="or a prompt CSV (its target rows are attacked)")] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="erased concept name (default: the edit's or the task's targets)")
    ] = None,
    budget: Annotated[list[str] | None, typer.Option(help="KEY=VALUE budget override (repeatable)")] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "shapeworld",
    clip: Annotated[
        Path | None, typer.Option(help="diffusers models: CLIP folder whose zero-shot reading judges the attack")
    ] = None,
    zero_shot_template: Annotated[str | None, typer.Option(help=ZERO_SHOT_HELP, show_default=False)] = None,
    steps: Steps = None,
    guidance: Guidance = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    device: Device = "auto",
    dtype: Dtype = "auto",
    memory: Memory = None,
    without_t5: WithoutT5 = False,
    overwrite: Overwrite = False,
) -> None:
    """Attack an erasure and report its attack success rate (ASR), budget and wall time.

    ShapeWorld's classifier judges the attack images; on a diffusers model, CLIP zero-shot over the prompt set's
    concept names (--clip). The white-box attacks (soft-prompt, inversion) run on ShapeWorld only."""
    from dataclasses import replace

    from erasekit.backbones.loader import world_for
    from erasekit.eval.attacks import AttackContext, run_attack
    from erasekit.eval.generation import EvalSettings, sampling_record

    options = _attack_budget(attack, budget or [])
    world = world_for(model)
    if (world is None) == (clip is None):
        raise UserError("--clip judges attacks on a diffusers model (and only there: ShapeWorld has its classifier)")
    if zero_shot_template is not None and clip is None:
        raise UserError("--zero-shot-template words the CLIP judge of --clip; ShapeWorld's classifier takes none")
    check_out(out, overwrite, model, edit, prompts, clip)
    settings = EvalSettings(steps=steps, guidance=guidance)
    artifact = load_edit(edit)
    attacked = _attacked_task(world, task, prompts)
    targets, preserve = _attack_rows(world, attacked, prompts)
    names = tuple(target or (artifact.concepts["targets"] if artifact else attacked.targets if attacked else ()))
    if not names:
        raise UserError("name the erased concept(s) with --target (no edit or task gives them)")
    backbone = load_model(model, device=device, dtype=dtype, memory=memory, without_t5=without_t5)
    settings = replace(settings, batch_size=getattr(backbone, "default_batch_size", 64))
    judge = _attack_judge(clip, targets + preserve, zero_shot_template)
    context = AttackContext(backbone, judge, settings, targets, names, artifact, seed, preserve)
    outcome = run_attack(attack, context, options)
    if not on_main():
        return
    record = {**outcome.summary(), "edit": str(edit) if edit else None, "targets": list(names)}
    record |= {"model": backbone.identity(), **context.judge.describe()}
    record["sampling"] = {"steps": context.settings.steps, "guidance": context.settings.guidance}
    record["sampling"] |= sampling_record(backbone)
    _write_attack(out, overwrite, record, outcome)
    _print_attack(out, attack, record, outcome, sampling_text(backbone, context.settings))


def _attack_budget(attack: str, items: list[str]) -> dict:
    """The attack's budget overrides; an unknown attack, budget or another attack's budget is refused up front."""
    from erasekit.eval.attacks import budget_for

    budgets = budget_options(items, attack)
    if other := sorted(set(budgets) - {attack}):
        raise UserError(f"--budget for {other[0]}, but this runs the {attack} attack")
    options = budgets.get(attack, {})
    budget_for(attack, options)  # unknown attack or budget: refused before any work
    return options


def _write_attack(out: Path, overwrite: bool, record: dict, outcome) -> None:
    """attack.json, and with attack images: images/, prompts.csv and grid.png (atomically)."""
    from erasekit.eval.prompts import write_prompts
    from erasekit.utils.io import atomic_dir

    with atomic_dir(out, overwrite) as tmp:
        (tmp / "attack.json").write_text(json_text(record))
        if outcome.images is not None and len(outcome.images):
            from erasekit.eval.grids import image_grid

            (tmp / "images").mkdir()
            save_images(tmp / "images", outcome.images, [f"{r.case_number}_0.png" for r in outcome.rows])
            write_prompts(tmp / "prompts.csv", outcome.rows)
            image_grid(outcome.images[:64]).save(tmp / "grid.png")


def _print_attack(out: Path, attack: str, record: dict, outcome, sampling: str) -> None:
    """The summary table; an attack that failed to run exits with status 1."""
    asr = f"{outcome.asr:.3f}" if outcome.status == "ok" else f"{outcome.status} ({outcome.reason})"
    rows = [("attack", attack), ("ASR", asr), ("images", str(record["images"]))]
    rows += [(f"budget {k}", str(v)) for k, v in outcome.budget.items()]
    rows += [("sampling", sampling), ("seconds", f"{outcome.seconds:.1f}"), ("out", str(out))]
    console.print(summary_table(f"attack → {out}", rows))
    if outcome.status == "failed":  # a script must never read an attack that did not run as a defence that held
        console.print(f"[red]the attack failed to run[/red]: {outcome.reason}", highlight=False, soft_wrap=True)
        sys.exit(1)


def _attack_judge(clip: Path | None, rows: list, template: str | None):
    """CLIP zero-shot over the rows' concept names from the ``clip`` folder (``template`` None: the protocol's); None
    without one: the attack then takes the judge of the backbone world's protocol (ShapeWorld: its classifier)."""
    if clip is None:
        return None
    from erasekit.eval.sd.clip import ClipJudge, LocalCLIP, zero_shot_classes
    from erasekit.eval.sd.protocol import DEFAULT_TEMPLATE

    return ClipJudge(LocalCLIP(clip), zero_shot_classes(rows), template or DEFAULT_TEMPLATE)

"""The ``erasekit`` command (typer + rich). Bad input: one line on stderr, exit status 2."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from erasekit.errors import UserError
from erasekit.utils.io import json_text

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Erase concepts from text-to-image models.")
world_app = typer.Typer(no_args_is_help=True, help="The embedded ShapeWorld: train, inspect.")
app.add_typer(world_app, name="world")
console = Console(stderr=True)
MODEL_HELP = "'shapeworld' (the embedded model) or a local diffusers folder (SD 1.x/2.x, SDXL, SD3)"
MAX_IMAGE_PIXELS = 4096 * 4096  # classify: ShapeWorld images are 32 x 32; far larger ones are refused unread
SEED_MAX = 2**63 - 1  # seeds every generator takes without wrapping
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace an --out that exists and is not empty")]


def _check_out(out: Path, overwrite: bool, model: str | None = None, *inputs: Path | None) -> None:
    """Refuse an unusable --out before any work (utils/io.check_output); the model folder is an input too."""
    from erasekit.utils.io import check_output

    model_dir = Path(model) if model not in (None, "shapeworld") else None
    check_output(out, overwrite, (model_dir, *inputs))


def _load_edit(edit: Path | None):
    from erasekit.artifacts import load_artifact

    return load_artifact(edit) if edit is not None else None


def _load_classifier():
    from erasekit.world.assets import classifier_dir
    from erasekit.world.classifier import load_classifier

    if not (classifier_dir() / "classifier.safetensors").exists():
        raise UserError("the shipped classifier is missing; run 'erasekit world train-classifier --ship'")
    return load_classifier(classifier_dir())


COMPILE_HELP = "sample through torch.compile: ~40 s once (cached after), then 1.1-1.5x faster (ShapeWorld only)"
EVAL_MODEL_HELP = "'shapeworld' (ShapeWorld protocol) or a local diffusers folder (Stable Diffusion protocol)"
INCEPTION_HELP = "torch-fidelity Inception weights file: FID / KID on Inception, not CLIP, features (SD protocol)"


def _load_model(model: str, compile_denoiser: bool = False):
    from erasekit.backbones.loader import load_backbone

    backbone = load_backbone(model)
    if compile_denoiser:
        if not hasattr(backbone, "compile_denoiser"):
            raise UserError(f"--compile: only the shapeworld model supports it, not {backbone.family}")
        backbone.compile_denoiser()
    return backbone


def _save_images(folder: Path, images: np.ndarray, names: list[str]) -> None:
    from PIL import Image

    for img, name in zip(images, names, strict=True):
        Image.fromarray(img).save(folder / name)


def _on_main() -> bool:
    """Under ``accelerate launch`` every process computes its share; only the main one writes and prints."""
    from erasekit.utils.distributed import is_main

    return is_main()


def _summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="output folder (written atomically)")],
    prompt: Annotated[str | None, typer.Option(help="one prompt")] = None,
    prompts: Annotated[Path | None, typer.Option(help="prompt CSV (specs/evaluation.md)")] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "shapeworld",
    edit: Annotated[Path | None, typer.Option(help="edit artifact folder")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed for --prompt (a CSV carries its own)")] = 0,
    num_images: Annotated[int, typer.Option(min=1, help="images per prompt")] = 4,
    steps: Annotated[int, typer.Option(min=1)] = 25,
    guidance: Annotated[float, typer.Option()] = 5.0,
    compile_denoiser: Annotated[bool, typer.Option("--compile", help=COMPILE_HELP)] = False,
    overwrite: Overwrite = False,
) -> None:
    """Generate images: {case_number}_{k}.png per prompt, plus grid.png."""
    from erasekit.eval.grids import image_grid
    from erasekit.eval.prompts import PromptRow, load_prompts
    from erasekit.eval.shapeworld_protocol import EvalSettings, generate_rows
    from erasekit.utils.io import atomic_dir

    if (prompt is None) == (prompts is None):
        raise UserError("give exactly one of --prompt TEXT or --prompts CSV")
    _check_out(out, overwrite, model, prompts, edit)
    settings = EvalSettings(num_images=num_images, steps=steps, guidance=guidance)
    artifact = _load_edit(edit)
    if prompt is not None and not prompt.strip():
        raise UserError("--prompt is empty")
    rows = (
        load_prompts(prompts, require_concepts=False)
        if prompts
        else [PromptRow(prompt.strip(), seed, 0, "", "preserve")]
    )
    backbone = _load_model(model, compile_denoiser)
    if artifact is not None:
        from erasekit.artifacts import apply_artifact

        apply_artifact(backbone, artifact)
    t0 = time.time()
    result = generate_rows(backbone, rows, settings)
    seconds = time.time() - t0
    if not _on_main():
        return
    with atomic_dir(out, overwrite) as tmp:
        _save_images(tmp, result.images, result.names)
        image_grid(result.images[:64]).save(tmp / "grid.png")
    console.print(
        _summary_table(
            "generate",
            [
                ("images", str(len(result.images))),
                ("seconds", f"{seconds:.1f}"),
                ("images/s", f"{len(result.images) / seconds:.2f}"),
                ("out", str(out)),
            ],
        )
    )


@app.command()
def classify(images: Annotated[list[Path], typer.Argument(help="image files")]) -> None:
    """Read shape, colour, pattern and background off images; JSON on stdout."""
    from PIL import Image, UnidentifiedImageError

    from erasekit.world.factors import FACTOR_NAMES, VOCAB

    arrays = []
    for path in images:
        if not path.is_file():
            raise UserError(f"image not found: {path}" + (" (a folder)" if path.is_dir() else ""))
        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:  # read from the header, before any decoding
                    raise UserError(f"{path}: {img.width}x{img.height} pixels is too large to classify")
                arrays.append(np.asarray(img.convert("RGB").resize((32, 32), Image.BILINEAR)))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            raise UserError(f"not an image: {path}") from None
    probs = _load_classifier().predict(np.stack(arrays))
    result = []
    for i, path in enumerate(images):
        entry = {"image": str(path)}
        for f in FACTOR_NAMES:
            k = int(probs[f][i].argmax())
            entry[f] = VOCAB.values(f)[k]
            entry[f"{f}_probability"] = round(float(probs[f][i][k]), 4)
        result.append(entry)
    sys.stdout.write(json_text(result))


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
    from erasekit.eval.prompts import load_prompts
    from erasekit.eval.report import render_report
    from erasekit.eval.shapeworld_protocol import EvalSettings
    from erasekit.eval.shapeworld_protocol import evaluate as run_protocol
    from erasekit.utils.io import atomic_dir

    sd_options = clip or reference or inception_weights or nudenet or nudenet_threshold is not None
    if model == "shapeworld" and sd_options:
        raise UserError("--clip, --reference, --inception-weights, --nudenet*: diffusers models only, not shapeworld")
    if model != "shapeworld" and clip is None:
        raise UserError("the Stable Diffusion protocol needs a local CLIP folder: --clip DIR")
    if nudenet_threshold is not None and not nudenet:
        raise UserError("--nudenet-threshold applies with --nudenet")
    _check_out(out, overwrite, model, prompts, edit, clip, reference, inception_weights)
    settings = EvalSettings(num_images=num_images, steps=steps, guidance=guidance)
    artifact = _load_edit(edit)
    rows = load_prompts(prompts, require_concepts=model == "shapeworld")
    backbone = _load_model(model, compile_denoiser)
    if artifact is not None:  # an edit is judged on prompts it never fitted (an in-sample figure is not erasure)
        from erasekit.methods.base import check_edit_heldout

        check_edit_heldout(backbone, artifact, [r.prompt for r in rows])
    if backbone.family != "shapeworld":
        options = {"reference_dir": reference, "inception_weights": inception_weights, "template": zero_shot_template}
        sd_run = (clip, nudenet, nudenet_threshold, overwrite)
        _evaluate_sd(backbone, rows, prompts, out, artifact, settings, sd_run, options)
        return
    metrics, edited, _ = run_protocol(backbone, rows, _load_classifier(), settings, edit=artifact)
    metrics["settings"]["prompts"] = str(prompts)
    if not _on_main():
        return
    grids = []
    for group in metrics["groups"]:
        idx = [i for i, r in enumerate(edited.rows) if r.group == group]
        grids.append((f"group: {group}", edited.images[idx], [edited.rows[i].prompt for i in idx]))
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "images").mkdir()
        _save_images(tmp / "images", edited.images, edited.names)
        (tmp / "metrics.json").write_text(json_text(metrics))
        (tmp / "report.html").write_text(render_report(metrics, grids, extra=_edit_html(artifact)))
    _print_metrics(metrics, out)


def _evaluate_sd(backbone, rows, prompts, out, artifact, settings, sd_run, options) -> None:
    """The Stable Diffusion protocol (eval/sd_protocol.py): metrics.json, images/, report.html; ``sd_run`` is
    (clip, nudenet, nudenet_threshold, overwrite); ``options`` go to ``evaluate_sd`` (reference_dir,
    inception_weights, template)."""
    from dataclasses import replace

    from erasekit.eval.report import fmt
    from erasekit.eval.sd_protocol import DEFAULT_NUDENET_THRESHOLD, NudeNetCounter, evaluate_sd, render_sd_report
    from erasekit.utils.io import atomic_dir

    clip, nudenet, nudenet_threshold, overwrite = sd_run
    threshold = DEFAULT_NUDENET_THRESHOLD if nudenet_threshold is None else nudenet_threshold
    counter = NudeNetCounter.load(threshold) if nudenet else None
    settings = replace(settings, batch_size=getattr(backbone, "default_batch_size", settings.batch_size))
    metrics, generated = evaluate_sd(backbone, rows, settings, clip, nudenet=counter, edit=artifact, **options)
    metrics["settings"]["prompts"] = str(prompts)
    if not _on_main():
        return
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "images").mkdir()
        _save_images(tmp / "images", generated.images, generated.names)
        (tmp / "metrics.json").write_text(json_text(metrics))
        (tmp / "report.html").write_text(render_sd_report(metrics, generated, extra=_edit_html(artifact)))
    keys = ("images", "clip_score", "zero_shot_target", "zero_shot_preserve", "nudity_images")
    console.print(_group_table(f"evaluation (Stable Diffusion) → {out}", metrics, keys))
    quality = metrics["settings"]["quality"]
    o, speed = metrics["overall"], metrics["timings"]["images_per_second"]
    features = f"on {quality['features']} features" if quality else "(no --reference)"
    console.print(f"FID {fmt(o['fid'])}  KID {fmt(o['kid'])} {features}  ({speed} images/s)")


def _edit_html(artifact) -> str:
    """The closed-form edit's per-stage table and plot for a report (empty without an edit or such stages: ETC's
    stage rows are timings, printed by ``erase``)."""
    from erasekit.eval.comparison import stage_plot
    from erasekit.eval.report import edit_section

    stages = artifact.metrics.get("stages") if artifact is not None else None
    closed_form = [s for s in stages or [] if "gap" in s]
    return edit_section(closed_form, stage_plot({artifact.method: closed_form})) if closed_form else ""


def _read_prompts(path: Path) -> list[str]:
    """Example prompts, one per line; blank lines are skipped, a file with none is an error."""
    from erasekit.utils.inputs import read_lines

    return read_lines(path, "target prompts file", blank_lines="skip", entries="prompts")


def _read_lines(path: Path, what: str) -> list[str]:
    """Concepts from a text file, one per line; blank lines are an error (they are usually a mistake)."""
    from erasekit.utils.inputs import read_lines

    return read_lines(path, f"{what} file", blank_lines="error")


@app.command()
def erase(
    out: Annotated[Path, typer.Option(help="artifact folder to write (atomically)")],
    method: Annotated[
        str, typer.Option(help="uce | erasepro | etc | filter (a prompt filter, the baseline)")
    ] = "erasepro",
    target: Annotated[list[str] | None, typer.Option(help="a concept to erase (repeatable)")] = None,
    targets: Annotated[Path | None, typer.Option(help="file with one target concept per line")] = None,
    anchor: Annotated[str | None, typer.Option(help="concept the targets are mapped to ('' = empty prompt)")] = None,
    preserve: Annotated[list[str] | None, typer.Option(help="a concept to keep (repeatable)")] = None,
    task: Annotated[str | None, typer.Option(help="a ShapeWorld task: instance | style | unsafe")] = None,
    kind: Annotated[str | None, typer.Option(help="object | style (picks the prompt templates)")] = None,
    templates: Annotated[
        Path | None, typer.Option(help="file of prompt templates, one per line, '{}' = concept")
    ] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "shapeworld",
    progressive: Annotated[bool, typer.Option(help="ErasePro: edit the text layers shallow to deep first")] = True,
    ridge: Annotated[float | None, typer.Option(min=1e-12, help="lambda (default: the method's, 0.5)")] = None,
    s_p: Annotated[
        float | None, typer.Option(min=0.0, help="preservation weight (default: the method's: UCE 1, ErasePro 0.1)")
    ] = None,
    chain_layers: Annotated[
        int | None, typer.Option(min=1, help="ErasePro: chain through only the first K layers of each text encoder")
    ] = None,
    s_e: Annotated[float | None, typer.Option(min=1e-12, help="UCE: erase weight (default: UCE's, 1)")] = None,
    mapping_pool: Annotated[
        Path | None, typer.Option(help="ETC: file of mapping-pool concepts, one per line (disjoint from targets)")
    ] = None,
    eraser: Annotated[
        str | None,
        typer.Option(help="ETC: keyed (default: closed form, token centres + transport) | moe (the trained MoEraser)"),
    ] = None,
    coverage: Annotated[
        float | None,
        typer.Option(help="ETC keyed: share of the targets' held-out tokens within the radius, in (0, 1] (1.0)"),
    ] = None,
    residual: Annotated[
        float | None,
        typer.Option(help="ETC keyed: share of a rewritten token's offset from its concept's mean kept, in [0, 1] (0)"),
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="ETC --eraser moe: MoEraser training steps")] = None,
    nir: Annotated[bool, typer.Option(help="ETC: noise injection-restore (robust to module removal)")] = True,
    work_dir: Annotated[
        Path | None, typer.Option(help="ETC: embedding cache + checkpoints (default: OUT.work); reruns resume")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="ETC: random seed")] = 0,
    target_prompts: Annotated[
        Path | None,
        typer.Option(help="ETC: example prompts that describe the one target concept, one per line (specs §1c)"),
    ] = None,
    prompt_states: Annotated[
        str | None, typer.Option(help="ETC --target-prompts: eot (default) | tokens | both states to fit on")
    ] = None,
    contexts: Annotated[
        int | None, typer.Option(min=2, help="ETC: contexts sampled per concept from the model's world (120)")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Erase concepts (closed form: uce, erasepro; trained: etc) and write an edit artifact."""
    from erasekit.artifacts import save_artifact
    from erasekit.concepts.pairs import ConceptSet
    from erasekit.methods.base import erase_to_artifact, get_method, method_config

    get_method(method)  # an unknown method is refused before any work
    _check_out(out, overwrite, model, targets, templates, mapping_pool, target_prompts)
    if work_dir is not None:
        from erasekit.utils.io import check_output

        check_output(work_dir, overwrite=True, inputs=(out,), flag="--work-dir")
    closed_form = ("uce", "erasepro")
    method_options = {  # flag: (its value, the methods it applies to)
        "--ridge": (ridge, closed_form),
        "--s-p": (s_p, closed_form),
        "--s-e": (s_e, ("uce",)),
        "--chain-layers": (chain_layers, ("erasepro",)),
        "--mapping-pool": (mapping_pool, ("etc",)),
        "--steps": (steps, ("etc",)),
        "--eraser": (eraser, ("etc",)),
        "--coverage": (coverage, ("etc",)),
        "--residual": (residual, ("etc",)),
        "--target-prompts": (target_prompts, ("etc",)),
        "--prompt-states": (prompt_states, ("etc",)),
        "--contexts": (contexts, ("etc",)),
    }
    for flag, (value, owners) in method_options.items():
        if value is not None and method not in owners:
            raise UserError(f"{flag} applies to --method {' / '.join(owners)}, not {method}")
    from erasekit.concepts.contexts import check_templates
    from erasekit.eval.tasks import TASKS

    names = list(target or []) + (_read_lines(targets, "targets") if targets else [])
    if task is not None:
        if task not in TASKS:
            raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        spec = TASKS[task]
        names = names or list(spec.targets)
        anchor = spec.anchor if anchor is None else anchor
        preserve = preserve or list(spec.preserve)
        kind = kind or spec.kind
    if method == "etc":
        pool = _read_lines(mapping_pool, "mapping pool") if mapping_pool else None
        if task is not None:  # the task's concepts to keep are its mapping pool (specs/etc.md §3)
            anchor, preserve, pool = None, None, pool or list(TASKS[task].preserve)
        if anchor is not None or preserve:
            raise UserError("ETC takes no --anchor or --preserve: it maps targets onto the --mapping-pool")
        examples = _read_prompts(target_prompts) if target_prompts else ()
        if examples and not names:
            names = [target_prompts.stem]
        concepts = _etc_concepts(names, pool)
        options = {"nir": nir, "seed": seed, "work_dir": str(work_dir or out.with_name(out.name + ".work"))}
        chosen = (
            ("steps", steps),
            ("eraser", eraser),
            ("coverage", coverage),
            ("residual", residual),
            ("prompt_states", prompt_states),
            ("contexts", contexts),
            ("templates", tuple(check_templates(_read_lines(templates, "templates"))) if templates else None),
            ("target_prompts", tuple(examples) or None),
        )
        options |= {k: v for k, v in chosen if v is not None}
        if (eraser or "keyed") == "keyed" and steps is not None:
            raise UserError("--steps applies to --eraser moe (the keyed eraser is built in closed form, not trained)")
        if eraser == "moe" and (coverage is not None or residual is not None):
            raise UserError("--coverage and --residual apply to --eraser keyed, not moe")
    else:
        concepts = ConceptSet.build(
            names, anchor or "", preserve, kind or "object", _read_lines(templates, "templates") if templates else None
        )
        options = {k: v for k, v in (("ridge", ridge), ("s_p", s_p)) if v is not None}
        if method == "erasepro":
            options |= {"progressive": progressive} | ({"chain_layers": chain_layers} if chain_layers else {})
        elif s_e is not None:
            options |= {"s_e": s_e}
    method_config(method, options)  # every option checked (finite, in range) before the model loads
    backbone = _load_model(model)
    from erasekit.concepts.pairs import casing_duplicates, unknown_token_names

    for name in unknown_token_names(concepts.targets, backbone):
        console.print(
            f"[yellow]warning:[/yellow] the model's tokenizer cannot spell target {name!r} (it becomes an unknown "
            "token, shared with other unknown text): check its spelling",
            highlight=False,
            soft_wrap=True,
        )
    for a, b in casing_duplicates(concepts.targets, backbone):
        console.print(
            f"[yellow]warning:[/yellow] targets {a!r} and {b!r} differ only in case, which this model "
            "does not see: one concept is erased twice",
            highlight=False,
            soft_wrap=True,
        )
    if task is not None:  # a task's evaluation prompts must be phrasings the method never fitted
        from erasekit.eval.prompts import load_prompts
        from erasekit.eval.tasks import prompt_file
        from erasekit.methods.base import check_heldout

        check_heldout(backbone, concepts, method, options, [r.prompt for r in load_prompts(prompt_file(task))])
    artifact = erase_to_artifact(backbone, concepts, method, options)
    summary = artifact.metrics
    if not _on_main():
        return
    save_artifact(artifact, out, overwrite)
    if method == "etc":
        _print_etc(summary, out)
        return
    if method == "filter":
        words = ", ".join(concepts.targets[:5]) + (" …" if len(concepts.targets) > 5 else "")
        console.print(
            _summary_table(
                f"erase (filter) → {out}", [("blocked names", words), ("replaced by", repr(concepts.anchors[0]))]
            )
        )
        return
    _print_stages(summary["stages"])
    console.print(
        _summary_table(
            f"erase ({method}) → {out}",
            [
                ("targets", ", ".join(concepts.targets[:5]) + (" …" if len(concepts.targets) > 5 else "")),
                ("anchor", repr(concepts.anchors[0])),
                ("maps edited", str(len(artifact.weights))),
                ("constraint columns", str(summary["columns"])),
                ("edit seconds", f"{summary['seconds']:.2f}"),
                ("peak memory (MiB)", f"{summary['peak_mib']:.0f}"),
            ],
        )
    )


def _budget_options(items: list[str], attack: str | None = None) -> dict[str, dict]:
    """Parse repeated ``[ATTACK:]KEY=VALUE`` budget options into {attack: {key: value}}."""
    budgets: dict[str, dict] = {}
    for item in items:
        head, sep, value = item.partition("=")
        name, colon, key = head.rpartition(":")
        name = name if colon else attack
        if not sep or not key or name is None:
            form = "KEY=VALUE" if attack else "ATTACK:KEY=VALUE"
            raise UserError(f"--budget {item!r}: expected {form}")
        budgets.setdefault(name, {})[key] = value
    return budgets


def _attack_rows(task: str | None, prompts: Path | None, shapeworld: bool = True):
    """(target rows, preserve rows) of a ShapeWorld task or a prompt CSV (free concept names off ShapeWorld)."""
    from erasekit.eval.prompts import load_prompts
    from erasekit.eval.tasks import TASKS, prompt_file

    if (task is None) == (prompts is None):
        raise UserError("give exactly one of --task NAME or --prompts CSV")
    if task is not None and task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    rows = (
        load_prompts(prompts, require_concepts=shapeworld) if prompts is not None else load_prompts(prompt_file(task))
    )
    targets = [r for r in rows if r.role == "target"]
    if not targets:
        raise UserError("the prompt set has no target rows to attack")
    return targets, [r for r in rows if r.role == "preserve"]


@app.command()
def attack(
    out: Annotated[Path, typer.Option(help="output folder: attack.json, prompts.csv, images/, grid.png (atomic)")],
    attack: Annotated[str, typer.Option(help="module-removal | paraphrase | ring-a-bell | soft-prompt | inversion")],
    edit: Annotated[Path | None, typer.Option(help="edit artifact folder (omit: attack the original model)")] = None,
    task: Annotated[str | None, typer.Option(help="a ShapeWorld task whose target prompts are attacked")] = None,
    prompts: Annotated[Path | None, typer.Option(help="or a prompt CSV (its target rows are attacked)")] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="erased concept name (default: the edit's or the task's targets)")
    ] = None,
    budget: Annotated[list[str] | None, typer.Option(help="KEY=VALUE budget override (repeatable)")] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "shapeworld",
    clip: Annotated[
        Path | None, typer.Option(help="diffusers models: CLIP folder whose zero-shot reading judges the attack")
    ] = None,
    zero_shot_template: Annotated[str, typer.Option(help="CLIP zero-shot text (with --clip)")] = "a photo of {concept}",
    steps: Annotated[int, typer.Option(min=1, help="sampling steps of the attack images")] = 25,
    guidance: Annotated[float, typer.Option()] = 5.0,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Attack an erasure and report its attack success rate (ASR), budget and wall time.

    ShapeWorld's classifier judges the attack images; on a diffusers model, CLIP zero-shot over the prompt set's
    concept names (--clip). The white-box attacks (soft-prompt, inversion) run on ShapeWorld only."""
    from dataclasses import replace

    from erasekit.eval.attacks import AttackContext, budget_for, run_attack
    from erasekit.eval.prompts import write_prompts
    from erasekit.eval.shapeworld_protocol import EvalSettings
    from erasekit.eval.tasks import TASKS
    from erasekit.utils.io import atomic_dir

    budgets = _budget_options(budget or [], attack)
    if other := sorted(set(budgets) - {attack}):
        raise UserError(f"--budget for {other[0]}, but this runs the {attack} attack")
    options = budgets.get(attack, {})
    budget_for(attack, options)  # unknown attack or budget: refused before any work
    shapeworld = model == "shapeworld"
    if shapeworld == (clip is not None):
        raise UserError("--clip judges attacks on a diffusers model (and only there: ShapeWorld has its classifier)")
    _check_out(out, overwrite, model, edit, prompts, clip)
    settings = EvalSettings(steps=steps, guidance=guidance)
    artifact = _load_edit(edit)
    targets, preserve = _attack_rows(task, prompts, shapeworld)
    names = tuple(target or (artifact.concepts["targets"] if artifact else TASKS[task].targets if task else ()))
    if not names:
        raise UserError("name the erased concept(s) with --target (no edit or task gives them)")
    backbone = _load_model(model)
    settings = replace(settings, batch_size=getattr(backbone, "default_batch_size", 64))
    judge = _attack_judge(clip, targets + preserve, zero_shot_template)
    context = AttackContext(backbone, judge, settings, targets, names, artifact, seed, preserve)
    outcome = run_attack(attack, context, options)
    if not _on_main():
        return
    with atomic_dir(out, overwrite) as tmp:
        record = {**outcome.summary(), "edit": str(edit) if edit else None, "targets": list(names)}
        record |= {"model": backbone.identity(), **context.judge.describe()}
        (tmp / "attack.json").write_text(json_text(record))
        if outcome.images is not None and len(outcome.images):
            from erasekit.eval.grids import image_grid

            (tmp / "images").mkdir()
            _save_images(tmp / "images", outcome.images, [f"{r.case_number}_0.png" for r in outcome.rows])
            write_prompts(tmp / "prompts.csv", outcome.rows)
            image_grid(outcome.images[:64]).save(tmp / "grid.png")
    asr = f"{outcome.asr:.3f}" if outcome.status == "ok" else f"{outcome.status} ({outcome.reason})"
    rows = [("attack", attack), ("ASR", asr), ("images", str(record["images"]))]
    rows += [(f"budget {k}", str(v)) for k, v in outcome.budget.items()]
    rows += [("seconds", f"{outcome.seconds:.1f}"), ("out", str(out))]
    console.print(_summary_table(f"attack → {out}", rows))
    if outcome.status == "failed":  # a script must never read an attack that did not run as a defence that held
        console.print(f"[red]the attack failed to run[/red]: {outcome.reason}", highlight=False, soft_wrap=True)
        sys.exit(1)


def _attack_judge(clip: Path | None, rows: list, template: str):
    """ShapeWorld's classifier, or CLIP zero-shot over the rows' concept names from the ``clip`` folder."""
    if clip is None:
        return _load_classifier()
    from erasekit.eval.attacks.judges import ClipJudge
    from erasekit.eval.sd_protocol import LocalCLIP, zero_shot_classes

    return ClipJudge(LocalCLIP(clip), zero_shot_classes(rows), template)


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="output folder: results.md, results.json, report.html (atomic)")],
    task: Annotated[list[str] | None, typer.Option(help="instance | style | unsafe | scale (repeatable; all)")] = None,
    method: Annotated[list[str] | None, typer.Option(help="filter | uce | erasepro | etc (repeatable; all)")] = None,
    attack: Annotated[list[str] | None, typer.Option(help="an attack (repeatable; default all)")] = None,
    no_attacks: Annotated[bool, typer.Option("--no-attacks", help="run no attack")] = False,
    per_group: Annotated[int, typer.Option(min=1, help="prompts per prompt group of each task")] = 16,
    scale_concepts: Annotated[int, typer.Option(help="concepts erased at once in the scale task (<= 2000)")] = 2000,
    budget: Annotated[list[str] | None, typer.Option(help="ATTACK:KEY=VALUE budget override (repeatable)")] = None,
    work: Annotated[
        Path | None, typer.Option(help="edits, caches and finished cells (default: OUT.work); resumes")
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="also write the Markdown table here (e.g. docs/results.md)")
    ] = None,
    steps: Annotated[int, typer.Option(min=1)] = 25,
    overwrite: Overwrite = False,
) -> None:
    """Methods x tasks x attacks on the ShapeWorld protocol: one comparison table and a report."""
    from erasekit.eval import bench as suite
    from erasekit.eval.comparison import stage_plot
    from erasekit.eval.report import edit_section, render_bench_report
    from erasekit.eval.shapeworld_protocol import EvalSettings
    from erasekit.utils.io import atomic_dir, atomic_file

    if no_attacks and attack:
        raise UserError("give --attack or --no-attacks, not both")
    from erasekit.utils.io import check_output

    check_output(out, overwrite, (work,))
    if results is not None:
        check_output(results, overwrite, (out, work), flag="--results")
    started = time.time()
    argv = sys.argv[sys.argv.index("bench") + 1 :] if "bench" in sys.argv else []
    config = suite.BenchConfig(
        work=work or out.with_name(out.name + ".work"),
        tasks=tuple(task or suite.SUITE_TASKS),
        methods=tuple(method or suite.SUITE_METHODS),
        attacks=() if no_attacks else tuple(attack or suite.SUITE_ATTACKS),
        per_group=per_group,
        scale_concepts=scale_concepts,
        budgets=_budget_options(budget or []),
        settings=EvalSettings(steps=steps),
    )
    config.check()
    outcome = suite.run_bench(config, _load_model("shapeworld"), _load_classifier(), progress=console.print)
    if not _on_main():
        return
    command = suite.bench_command(argv)
    rows = suite.comparison_rows(outcome)
    markdown = suite.results_markdown(outcome, config, command, time.time() - started)
    scale_json = Path(__file__).resolve().parents[2] / "docs" / "etc_scale.json"
    scale_rows = json.loads(scale_json.read_text())["rows"] if scale_json.is_file() else []
    stages = next(iter(outcome["stages"].values()), None)
    settings = {"command": command, "config": config.record(), "seconds": round(time.time() - started, 1)}
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "results.md").write_text(markdown)
        record = {k: v for k, v in outcome.items() if k != "grids"} | {"rows": rows, "settings": settings}
        (tmp / "results.json").write_text(json_text(record, default=str))
        page = render_bench_report(
            rows,
            config.attacks,
            outcome["grids"],
            edit_section(stages, stage_plot({"ErasePro": stages})) if stages else "",
            scale_rows,
            settings,
            command,
        )
        (tmp / "report.html").write_text(page)
    if results is not None:
        with atomic_file(results) as handle:
            handle.write(markdown)
    from erasekit.eval.report import fmt

    table = Table(title=f"bench → {out} (ASR per attack)")
    columns = {"task": "task", "method": "method", "acc_e": "Acc_e", "acc_s_relative": "Acc_s rel", "h": "H"}
    columns |= {f"ASR {a}": a for a in config.attacks}
    for key, title in columns.items():
        table.add_column(title, justify="left" if key in ("task", "method") else "right")
    for r in rows:
        table.add_row(*(fmt(r.get(c)) for c in columns))
    console.print(table)


@app.command()
def export(
    edit: Annotated[Path, typer.Option(help="edit artifact folder")],
    model: Annotated[str, typer.Option(help="the local diffusers folder the edit was made for")],
    out: Annotated[Path, typer.Option(help="folder for the edited pipeline (save_pretrained, atomic)")],
    overwrite: Overwrite = False,
) -> None:
    """Write the edited model as a complete diffusers folder (SD 1.x/2.x, SDXL, SD3)."""
    from erasekit.artifacts import export_artifact

    _check_out(out, overwrite, model, edit)
    artifact = _load_edit(edit)
    export_artifact(_load_model(model), artifact, out, overwrite)
    console.print(_summary_table("export", [("edit", str(edit)), ("model", model), ("out", str(out))]))


def _etc_concepts(names: list[str], pool: list[str] | None):
    """ETC's concept set: the targets, and the mapping pool as the concepts to preserve (specs/etc.md §3)."""
    from erasekit.concepts.pairs import ConceptSet

    if pool is None:
        raise UserError("ETC needs --mapping-pool FILE (concepts of the same domain, disjoint from the targets)")
    overlap = sorted(set(names) & set(pool))
    if overlap:
        raise UserError(f"{overlap[0]!r} is both a target and in the mapping pool; the two must be disjoint")
    return ConceptSet.build(names, "", pool)


ETC_ANCHOR_LABELS = {
    "boundary": "boundary-anchor",
    "off_plane": "off-plane-anchor",
    "mapping": "mapping-sample",
    "context": "context-token",
}


def _print_etc(summary: dict, out: Path) -> None:
    table = Table(title="ETC stages")
    for col in ("stage", "seconds", "peak MiB"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in summary["stages"]:
        table.add_row(row["stage"], f"{row['seconds']:.1f}", f"{row['peak_mib']:.0f}")
    console.print(table)
    rows = [
        ("targets", str(summary["targets"])),
        ("mapping pool", str(summary["pool"])),
        *(
            (("keys", str(summary["keys"])), ("rewrite radius θ (held-out contexts)", f"{summary['threshold']:.3f}"))
            if "keys" in summary
            else ()
        ),
        *(
            (label, f"{summary[key]:.3f}")
            for key, label in (
                ("heldout_target_rewritten", "held-out target tokens rewritten"),
                ("heldout_pool_rewritten", "held-out mapping-pool tokens rewritten"),
            )
            if key in summary
        ),
        *((("erase error (worst layer)", f"{summary['erase_error']:.3f}"),) if "erase_error" in summary else ()),
        *(
            (f"{label} change (worst layer)", f"{summary[f'{kind}_change']:.3f}")
            for kind, label in ETC_ANCHOR_LABELS.items()
            if f"{kind}_change" in summary
        ),
        ("NIR restore error (worst layer)", f"{summary['restore_error']:.3f}" if "restore_error" in summary else "off"),
        ("total seconds", f"{summary['seconds']:.1f}"),
        ("peak memory (MiB)", f"{summary['peak_mib']:.0f}"),
    ]
    console.print(_summary_table(f"erase (etc) → {out}", rows))


def _print_stages(stages: list[dict]) -> None:
    table = Table(title="per-stage residual and change")
    for col in ("stage", "gap ‖Y−X‖/‖Y‖", "residual", "‖ΔW‖/‖W‖", "N", "d_in"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in stages:
        note = " (least squares)" if row["least_squares"] else ""
        table.add_row(
            row["stage"] + (f" ×{row['maps']}" if row["maps"] > 1 else ""),
            f"{row['gap']:.4f}",
            f"{row['residual']:.2e}{note}",
            f"{row['delta']:.4f}",
            str(row["constraints"]),
            str(row["d_in"]),
        )
    console.print(table)


def _group_table(title: str, metrics: dict, keys: tuple[str, ...]) -> Table:
    """One row per prompt group (and "all"), one column per metric key."""
    from erasekit.eval.report import fmt

    table = Table(title=title)
    table.add_column("group")
    for k in keys:
        table.add_column(k, justify="right")
    for name, summary in [("all", metrics["overall"]), *metrics["groups"].items()]:
        table.add_row(name, *(fmt(summary.get(k)) for k in keys))
    return table


def _print_metrics(metrics: dict, out: Path) -> None:
    from erasekit.eval.report import fmt

    keys = ("images", "agree_shape", "agree_colour", "agree_pattern", "agree_joint", "acc_e", "acc_s")
    console.print(_group_table(f"evaluation → {out}", metrics, keys))
    o = metrics["overall"]
    console.print(
        f"SW-FID {fmt(o.get('sw_fid'))}  SW-KID {fmt(o.get('sw_kid'))}  "
        f"({metrics['timings']['images_per_second']} images/s)"
    )


def _pattern_weights(items: list[str]) -> dict[str, float] | None:
    """Parse repeated ``PATTERN=W`` options; a bad one is a UserError."""
    from erasekit.world.factors import VOCAB

    weights: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in VOCAB.pattern:
            known = ", ".join(VOCAB.pattern)
            raise UserError(f"--pattern-weight {item!r}: expected PATTERN=W with PATTERN one of {known}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UserError(f"--pattern-weight {item!r}: {value!r} is not a number") from None
        if not 0 < weights[name] < float("inf"):
            raise UserError(f"--pattern-weight {item!r}: the weight must be a positive finite number")
    return weights or None


@world_app.command("train-denoiser")
def train_denoiser_cmd(
    out: Annotated[Path, typer.Option(help="checkpoint folder; an existing one is resumed")] = Path("runs/denoiser"),
    steps: Annotated[int, typer.Option(min=1)] = 8000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option(min=0.0)] = 6e-4,
    lr_final: Annotated[
        float | None, typer.Option(min=0.0, help="cosine-decay the lr to this by the last step (default: constant)")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    ship: Annotated[bool, typer.Option(help="export the EMA weights into the package's assets")] = False,
    continue_shipped: Annotated[
        bool, typer.Option(help="start from the shipped weights (when --out has no checkpoint yet)")
    ] = False,
    pattern_weight: Annotated[
        list[str] | None,
        typer.Option(help="PATTERN=W: draw captions naming PATTERN W times as often (repeatable)"),
    ] = None,
) -> None:
    """Train the ShapeWorld denoiser (checkpoints every 100 steps; resumes automatically)."""
    from erasekit.world.assets import denoiser_dir
    from erasekit.world.train_denoiser import DenoiserTrainConfig, train_denoiser

    config = DenoiserTrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        lr_final=lr_final,
        seed=seed,
        pattern_weights=_pattern_weights(pattern_weight or []),
    )
    init = denoiser_dir() if continue_shipped else None
    if init is not None and not (init / "training.json").exists():
        raise UserError("no shipped denoiser to continue from")
    card = train_denoiser(out, config, export=denoiser_dir() if ship else out / "export", init_from=init)
    console.print(_summary_table("denoiser", [(k, str(v)) for k, v in card.items() if k != "config"]))


@world_app.command("train-classifier")
def train_classifier_cmd(
    out: Annotated[Path, typer.Option(help="checkpoint folder; an existing one is resumed")] = Path("runs/classifier"),
    steps: Annotated[int, typer.Option(min=1)] = 2000,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    ship: Annotated[bool, typer.Option(help="export the weights into the package's assets")] = False,
) -> None:
    """Train the factor classifier; reports held-out accuracy per head."""
    from erasekit.world.assets import classifier_dir
    from erasekit.world.classifier import ClassifierTrainConfig, train_classifier

    card = train_classifier(
        out, ClassifierTrainConfig(steps=steps, seed=seed), export=classifier_dir() if ship else out / "export"
    )
    acc = card["heldout_accuracy"]
    console.print(_summary_table("classifier held-out accuracy", [(f, f"{v:.4f}") for f, v in acc.items()]))


@world_app.command("info")
def info() -> None:
    """Vocabulary sizes, shipped assets and their measured quality."""
    from erasekit.world.assets import ASSETS
    from erasekit.world.factors import FACTOR_NAMES, VOCAB

    rows = [(f"{f} values", str(len(VOCAB.values(f)))) for f in FACTOR_NAMES]
    rows.append(("triple concepts", str(len(VOCAB.shape) * len(VOCAB.colour) * len(VOCAB.pattern))))
    card = ASSETS / "model_card.json"
    if card.exists():
        rows += [(k, str(v)) for k, v in json.loads(card.read_text())["summary"].items()]
    console.print(_summary_table("ShapeWorld", rows))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/demo"),
    per_group: Annotated[int, typer.Option(min=1, help="prompts per prompt group of the task")] = 16,
    overwrite: Overwrite = False,
) -> None:
    """The main job: erase 'star' from ShapeWorld with ErasePro, evaluate before/after, write a report."""
    from erasekit.artifacts import save_artifact
    from erasekit.eval.comparison import MethodRun, erase_with, task_concepts
    from erasekit.eval.prompts import first_per_group, load_prompts
    from erasekit.eval.report import render_report
    from erasekit.eval.shapeworld_protocol import EvalSettings
    from erasekit.eval.shapeworld_protocol import evaluate as run_protocol
    from erasekit.eval.tasks import TASKS, prompt_file
    from erasekit.utils.io import atomic_dir

    _check_out(out, overwrite)
    t0 = time.time()
    task = TASKS["instance"]
    rows = first_per_group(load_prompts(prompt_file("instance")), per_group)
    backbone = _load_model("shapeworld")
    artifact = erase_with(backbone, task_concepts(task), MethodRun("ErasePro", "erasepro", {}))
    metrics, edited, original = run_protocol(backbone, rows, _load_classifier(), EvalSettings(), edit=artifact)
    stages = artifact.metrics["stages"]
    grids = []
    for role, title in (("target", "target prompts (star)"), ("preserve", "neighbour and other prompts")):
        idx = [i for i, r in enumerate(edited.rows) if r.role == role][:32]
        captions = [edited.rows[i].prompt for i in idx]
        grids += [
            (f"{title} — original", original.images[idx], captions),
            (f"{title} — ErasePro", edited.images[idx], captions),
        ]
    if not _on_main():
        return
    with atomic_dir(out, overwrite) as tmp:
        save_artifact(artifact, tmp / "edit")
        (tmp / "metrics.json").write_text(json_text(metrics))
        report = render_report(metrics, grids, "erasekit demo: erase 'star' with ErasePro", _edit_html(artifact))
        (tmp / "report.html").write_text(report)
    o, before = metrics["overall"], metrics["overall"]["original"]
    console.print(
        _summary_table(
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


def _quiet_libraries() -> None:
    """stderr carries our summary and one-line errors: library warnings and log chatter are silenced."""
    import os
    import warnings

    for library in ("TRANSFORMERS", "DIFFUSERS"):
        os.environ.setdefault(f"{library}_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.simplefilter("ignore")


def _usage_message(exc) -> str:
    """Click's message for a usage error, naming the nearest valid flag for an unknown one."""
    possibilities = getattr(exc, "possibilities", None)
    if getattr(exc, "option_name", None) and possibilities:  # close matches, nearest first
        return f"no such option {exc.option_name}; did you mean {possibilities[0]}?"
    return exc.format_message()


def _terminate(signum: int, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed on the way out."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Entry point: a UserError or a usage error becomes one line on stderr and exit status 2."""
    import signal

    from rich.markup import escape
    from typer._click import exceptions as click  # typer's own click: its usage errors (typer has no public name)

    _quiet_libraries()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        exc.show()
        code = exc.exit_code
    except (UserError, click.ClickException) as exc:
        message = _usage_message(exc) if isinstance(exc, click.ClickException) else str(exc)
        console.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
        code = 2 if isinstance(exc, UserError) else exc.exit_code
    except typer.Abort:
        console.print("[red]interrupted[/red]", highlight=False)
        code = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

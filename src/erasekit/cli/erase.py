"""erasekit erase."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli.common import (
    MODEL_HELP,
    SEED_MAX,
    Overwrite,
    app,
    check_out,
    console,
    load_model,
    on_main,
    summary_table,
)
from erasekit.cli.tables import print_etc, print_stages
from erasekit.errors import UserError


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
    check_out(out, overwrite, model, targets, templates, mapping_pool, target_prompts)
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
    backbone = load_model(model)
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
    if not on_main():
        return
    save_artifact(artifact, out, overwrite)
    if method == "etc":
        print_etc(summary, out)
        return
    if method == "filter":
        words = ", ".join(concepts.targets[:5]) + (" …" if len(concepts.targets) > 5 else "")
        console.print(
            summary_table(
                f"erase (filter) → {out}", [("blocked names", words), ("replaced by", repr(concepts.anchors[0]))]
            )
        )
        return
    print_stages(summary["stages"])
    console.print(
        summary_table(
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


def _etc_concepts(names: list[str], pool: list[str] | None):
    """ETC's concept set: the targets, and the mapping pool as the concepts to preserve (specs/etc.md §3)."""
    from erasekit.concepts.pairs import ConceptSet

    if pool is None:
        raise UserError("ETC needs --mapping-pool FILE (concepts of the same domain, disjoint from the targets)")
    overlap = sorted(set(names) & set(pool))
    if overlap:
        raise UserError(f"{overlap[0]!r} is both a target and in the mapping pool; the two must be disjoint")
    return ConceptSet.build(names, "", pool)

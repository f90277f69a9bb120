"""erasekit erase."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli.common import (
    MODEL_HELP,
    Overwrite,
    app,
    check_out,
    console,
    load_model,
    on_main,
)
from erasekit.cli.tables import print_erase_summary
from erasekit.errors import UserError


def _read_prompts(path: Path) -> list[str]:
    """Example prompts, one per line; blank lines are skipped, a file with none is an error."""
    from erasekit.utils.inputs import read_lines

    return read_lines(path, "target prompts file", blank_lines="skip", entries="prompts")


def _read_lines(path: Path, what: str) -> list[str]:
    """Concepts from a text file, one per line; blank lines are an error (they are usually a mistake)."""
    from erasekit.utils.inputs import read_lines

    return read_lines(path, f"{what} file", blank_lines="error")


SET_HELP = "a method setting KEY=VALUE (repeatable), e.g. --set ridge=0.3 --set nir=false (README: Method settings)"
CONFIG_HELP = "a JSON or TOML file of method settings, or an edit's manifest.json (its settings); --set wins"


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
    mapping_pool: Annotated[
        Path | None, typer.Option(help="file of concepts the targets are mapped onto, one per line (ETC)")
    ] = None,
    target_prompts: Annotated[
        Path | None, typer.Option(help="example prompts that describe the one target concept, one per line (ETC)")
    ] = None,
    task: Annotated[str | None, typer.Option(help="a ShapeWorld task: instance | style | unsafe")] = None,
    kind: Annotated[str | None, typer.Option(help="object | style (picks the prompt templates)")] = None,
    templates: Annotated[
        Path | None, typer.Option(help="file of prompt templates, one per line, '{}' = concept")
    ] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "shapeworld",
    setting: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
    config: Annotated[Path | None, typer.Option(help=CONFIG_HELP)] = None,
    overwrite: Overwrite = False,
) -> None:
    """Erase concepts (closed form: uce, erasepro; trained: etc) and write an edit artifact."""
    from erasekit.artifacts import save_artifact
    from erasekit.concepts.pairs import ConceptSet
    from erasekit.methods.base import erase_to_artifact, get_method, method_config

    chosen = get_method(method)  # an unknown method is refused before any work
    check_out(out, overwrite, model, targets, templates, mapping_pool, target_prompts, config)
    options = _settings(chosen, config, setting or [])
    method_config(method, options)  # every setting checked (finite, in range) before any file is read
    _check_applicable(chosen.config_class, options)
    if "work_dir" in options:
        from erasekit.utils.io import check_output

        check_output(Path(options["work_dir"]), overwrite=True, inputs=(out,), flag="--set work_dir")
    pooled = getattr(chosen.config_class, "MAPS_ONTO_POOL", False)  # the method maps targets onto a pool
    for flag, value, applies in (
        ("--mapping-pool", mapping_pool, pooled),
        ("--target-prompts", target_prompts, _has_setting(chosen, "target_prompts")),
    ):
        if value is not None and not applies:
            raise UserError(f"{flag} does not apply to --method {method}")
    from erasekit.concepts.contexts import check_templates
    from erasekit.world.tasks import TASKS

    names = list(target or []) + (_read_lines(targets, "targets") if targets else [])
    if task is not None:
        if task not in TASKS:
            raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        spec = TASKS[task]
        names = names or list(spec.targets)
        anchor = spec.anchor if anchor is None else anchor
        preserve = preserve or list(spec.preserve)
        kind = kind or spec.kind
    if pooled:
        pool = _read_lines(mapping_pool, "mapping pool") if mapping_pool else None
        if task is not None:  # the task's concepts to keep are its mapping pool (specs/etc.md §3)
            anchor, preserve, pool = None, None, pool or list(TASKS[task].preserve)
        if anchor is not None or preserve:
            raise UserError(f"{method} takes no --anchor or --preserve: it maps targets onto the --mapping-pool")
        examples = _read_prompts(target_prompts) if target_prompts else ()
        if examples and not names:
            names = [target_prompts.stem]
        concepts = _pool_concepts(method, names, pool)
        options.setdefault("work_dir", str(out.with_name(out.name + ".work")))
        chosen_files = (
            ("templates", tuple(check_templates(_read_lines(templates, "templates"))) if templates else None),
            ("target_prompts", tuple(examples) or None),
        )
        options |= {k: v for k, v in chosen_files if v is not None}
    else:
        concepts = ConceptSet.build(
            names, anchor or "", preserve, kind or "object", _read_lines(templates, "templates") if templates else None
        )
    method_config(method, options)  # with the files read in, before the model loads
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
        from erasekit.methods.base import check_heldout
        from erasekit.world.tasks import prompt_file

        check_heldout(backbone, concepts, method, options, [r.prompt for r in load_prompts(prompt_file(task))])
    artifact = erase_to_artifact(backbone, concepts, method, options)
    if not on_main():
        return
    save_artifact(artifact, out, overwrite)
    print_erase_summary(chosen, artifact, out)


def _settings(chosen, config: Path | None, items: list[str]) -> dict:
    """The method's settings from ``--config`` and then ``--set`` (which wins), typed by its config's fields."""
    from erasekit.utils.options import parse_assignments, read_config_file, typed_settings

    values = (read_config_file(config) if config is not None else {}) | parse_assignments(items, "--set")
    return typed_settings(chosen.config_class, values, f"method {chosen.name}")


def _check_applicable(config_class: type, options: dict) -> None:
    """A setting that applies only under another (the config's ``APPLIES_WHEN``: {setting: (field, value)}) is
    refused, not silently ignored, when given under a different one."""
    from dataclasses import fields

    defaults = {f.name: f.default for f in fields(config_class)}
    for key, (field, value) in getattr(config_class, "APPLIES_WHEN", {}).items():
        actual = options.get(field, defaults.get(field))
        if key in options and actual != value:
            raise UserError(f"setting {key} applies to {field}={value}, not {field}={actual}")


def _has_setting(chosen, name: str) -> bool:
    from dataclasses import fields

    return any(f.name == name for f in fields(chosen.config_class))


def _pool_concepts(method: str, names: list[str], pool: list[str] | None):
    """The concept set of a method that maps targets onto a pool: the targets, and the pool as the concepts to
    preserve (specs/etc.md §3)."""
    from erasekit.concepts.pairs import ConceptSet

    if pool is None:
        raise UserError(f"{method} needs --mapping-pool FILE (concepts of the same domain, disjoint from the targets)")
    overlap = sorted(set(names) & set(pool))
    if overlap:
        raise UserError(f"{overlap[0]!r} is both a target and in the mapping pool; the two must be disjoint")
    return ConceptSet.build(names, "", pool)

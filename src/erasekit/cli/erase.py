"""erasekit erase."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from erasekit.cli.common import (
    MODEL_HELP,
    Device,
    Dtype,
    Memory,
    Overwrite,
    WithoutT5,
    app,
    check_out,
    console,
    load_model,
    on_main,
    world_task,
)
from erasekit.cli.tables import print_erase_summary
from erasekit.errors import UserError

if TYPE_CHECKING:
    from erasekit.backbones.world import Task


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
    task: Annotated[
        str | None, typer.Option(help="a task of the model's world (shapeworld: instance | style | unsafe)")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="object | style (picks the prompt templates)")] = None,
    templates: Annotated[
        Path | None, typer.Option(help="file of prompt templates, one per line, '{}' = concept")
    ] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "shapeworld",
    setting: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
    config: Annotated[Path | None, typer.Option(help=CONFIG_HELP)] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    memory: Memory = None,
    without_t5: WithoutT5 = False,
    overwrite: Overwrite = False,
) -> None:
    """Erase concepts (closed form: uce, erasepro; trained: etc) and write an edit artifact."""
    from erasekit.artifacts import save_artifact
    from erasekit.backbones.loader import world_for
    from erasekit.methods.base import erase_to_artifact, get_method, method_config

    chosen = get_method(method)  # an unknown method is refused before any work
    check_out(out, overwrite, model, targets, templates, mapping_pool, target_prompts, config)
    options = _checked_settings(chosen, config, setting or [], out)
    _check_file_options(chosen, mapping_pool, target_prompts)
    names = list(target or []) + (_read_lines(targets, "targets") if targets else [])
    erased = world_task(world_for(model), task) if task is not None else None
    request = ConceptRequest(names, anchor, preserve, kind, templates, mapping_pool, target_prompts).with_task(erased)
    if _maps_onto_pool(chosen):
        concepts = _pooled_concepts(method, request, erased, options, out)
    else:
        concepts = _anchored_concepts(request)
    method_config(method, options)  # with the files read in, before the model loads
    backbone = load_model(model, device=device, dtype=dtype, memory=memory, without_t5=without_t5)
    _warn_about_targets(concepts, backbone)
    if erased is not None:  # a task's evaluation prompts must be phrasings the method never fitted
        from erasekit.methods.base import check_heldout

        check_heldout(backbone, concepts, method, options, [r.prompt for r in erased.rows()])
    artifact = erase_to_artifact(backbone, concepts, method, options)
    if not on_main():
        return
    save_artifact(artifact, out, overwrite)
    print_erase_summary(chosen, artifact, out)


@dataclass(frozen=True)
class ConceptRequest:
    """The concepts as the command line names them; a task fills in what they leave out."""

    names: list[str]
    anchor: str | None
    preserve: list[str] | None
    kind: str | None
    templates: Path | None
    mapping_pool: Path | None
    target_prompts: Path | None

    def with_task(self, task: Task | None) -> ConceptRequest:
        if task is None:
            return self
        return replace(
            self,
            names=self.names or list(task.targets),
            anchor=task.anchor if self.anchor is None else self.anchor,
            preserve=self.preserve or list(task.preserve),
            kind=self.kind or task.kind,
        )

    def template_lines(self) -> list[str] | None:
        return _read_lines(self.templates, "templates") if self.templates else None


def _checked_settings(chosen, config: Path | None, items: list[str], out: Path) -> dict:
    """The method's settings, every one checked (finite, in range, applicable) before any file is read; a
    ``work_dir`` setting must be a usable folder apart from ``out``."""
    from erasekit.methods.base import method_config

    options = _settings(chosen, config, items)
    method_config(chosen.name, options)
    _check_applicable(chosen.config_class, options)
    if "work_dir" in options:
        from erasekit.utils.io import check_output

        check_output(Path(options["work_dir"]), overwrite=True, inputs=(out,), flag="--set work_dir")
    return options


def _check_file_options(chosen, mapping_pool: Path | None, target_prompts: Path | None) -> None:
    """--mapping-pool and --target-prompts only for a method that takes them."""
    for flag, value, applies in (
        ("--mapping-pool", mapping_pool, _maps_onto_pool(chosen)),
        ("--target-prompts", target_prompts, _has_setting(chosen, "target_prompts")),
    ):
        if value is not None and not applies:
            raise UserError(f"{flag} does not apply to --method {chosen.name}")


def _maps_onto_pool(chosen) -> bool:
    """The method maps the targets onto a pool of concepts (ETC), not onto an anchor."""
    return getattr(chosen.config_class, "MAPS_ONTO_POOL", False)


def _anchored_concepts(request: ConceptRequest):
    """Targets mapped onto an anchor, with concepts to preserve."""
    from erasekit.concepts.pairs import ConceptSet

    kind = request.kind or "object"
    return ConceptSet.build(request.names, request.anchor or "", request.preserve, kind, request.template_lines())


def _pooled_concepts(method: str, request: ConceptRequest, task: Task | None, options: dict, out: Path):
    """Targets mapped onto the mapping pool (a task's: its concepts to keep, specs/etc.md §3); ``options`` gain the
    work folder, the templates and the example prompts."""
    from erasekit.concepts.contexts import check_templates

    pool = _read_lines(request.mapping_pool, "mapping pool") if request.mapping_pool else None
    anchor, preserve = request.anchor, request.preserve
    if task is not None:
        anchor, preserve, pool = None, None, pool or list(task.preserve)
    if anchor is not None or preserve:
        raise UserError(f"{method} takes no --anchor or --preserve: it maps targets onto the --mapping-pool")
    examples = _read_prompts(request.target_prompts) if request.target_prompts else ()
    names = request.names or ([request.target_prompts.stem] if examples else [])
    concepts = _pool_concepts(method, names, pool)
    options.setdefault("work_dir", str(out.with_name(out.name + ".work")))
    templates = request.template_lines()
    chosen_files = (
        ("templates", tuple(check_templates(templates)) if templates else None),
        ("target_prompts", tuple(examples) or None),
    )
    options |= {k: v for k, v in chosen_files if v is not None}
    return concepts


def _warn_about_targets(concepts, backbone) -> None:
    """Targets the model's tokenizer cannot spell, or cannot tell apart: warnings, the edit still runs."""
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

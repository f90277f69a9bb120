"""``erasekit bench``: methods x tasks x attacks on a world's protocol (ShapeWorld's), one comparison table.

The bench names no method and no world: its methods are the method registry's (``erasekit.methods.METHODS``),
its tasks, protocol and judge are those of the backbone's world (backbones/world.py) — its committed tasks and
its scale task (``scale``: many concepts erased at once).

For each task: the original model's images once; then per method an edit (saved in the work folder and
reused by a rerun), its evaluation (Acc_e, Acc_s, H, SW-FID, edit time) and every attack on it; the attacks
also run on the original model, where they show they can draw the concept at all. Each finished attack is
saved as JSON in the work folder, so an interrupted bench resumes where it stopped; an attack that failed to run
shows as "failed" in every table (never as an ASR) and runs again on a rerun. Folder and file names
carry a hash of what they depend on (the task's prompts and size, the sampling, the attack's budget): a
rerun with other settings computes anew instead of reusing a result of different settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from erasekit.artifacts import Artifact, load_artifact, save_artifact
from erasekit.backbones.loader import default_world
from erasekit.backbones.world import Task, World, world_of
from erasekit.concepts.pairs import ConceptSet
from erasekit.errors import UserError
from erasekit.eval.attacks import ATTACKS, FAILED, NOT_APPLICABLE, OK, AttackContext, budget_for, run_attack
from erasekit.eval.comparison import markdown_table, table_row, task_concepts
from erasekit.eval.generation import EvalSettings, generate_rows
from erasekit.eval.prompts import PromptRow, first_per_group
from erasekit.eval.report import FailedCell
from erasekit.methods import METHODS
from erasekit.methods.base import check_heldout, erase_to_artifact, get_method, method_config
from erasekit.utils.inputs import read_text
from erasekit.utils.io import write_json

SCALE = "scale"  # the world's scale task: many of its concepts erased at once


def suite_tasks(world: World) -> tuple[str, ...]:
    """The tasks a bench runs on ``world``: its committed tasks, then its scale task."""
    return (*world.tasks(), SCALE)


SUITE_TASKS = suite_tasks(default_world())


def suite_methods() -> tuple[str, ...]:
    """Every registered method, in registration order (one registered later included)."""
    return tuple(METHODS)


SUITE_ATTACKS = tuple(ATTACKS)
GRID_IMAGES = 8  # target and preserve images per method shown in the report


@dataclass(frozen=True)
class BenchTask:
    name: str
    rows: list[PromptRow]
    names: tuple[str, ...]  # the erased concept names (what a prompt filter blocks)
    concepts: Callable[[str], ConceptSet]  # method -> its concept set
    options: Callable[[str], dict]  # method -> its options
    params: dict  # what the task's concepts depend on besides its name (names its edits' folder)


@dataclass
class BenchConfig:
    work: Path
    tasks: tuple[str, ...] = SUITE_TASKS
    methods: tuple[str, ...] = field(default_factory=suite_methods)
    attacks: tuple[str, ...] = SUITE_ATTACKS
    per_group: int = 16
    scale_concepts: int = 2000
    budgets: dict[str, dict] = field(default_factory=dict)
    settings: EvalSettings = field(default_factory=EvalSettings)

    def check(self, world: World | None = None) -> None:
        """Refuse unknown names and budgets before any work (one-line UserErrors); tasks are ``world``'s (default:
        the embedded world's)."""
        world = world or default_world()
        for kind, names, known in (
            ("task", self.tasks, suite_tasks(world)),
            ("method", self.methods, suite_methods()),
            ("attack", self.attacks, SUITE_ATTACKS),
        ):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise UserError(f"unknown {kind} {unknown[0]!r}; choose from {', '.join(known)}")
        for method in self.methods:
            get_method(method)
        for attack, options in self.budgets.items():
            budget_for(attack, options)
        if not 1 <= self.scale_concepts <= world.max_scale_concepts:
            most = world.max_scale_concepts
            raise UserError(f"--scale-concepts must be between 1 and {most}, got {self.scale_concepts}")

    def record(self) -> dict:
        """The config as JSON (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def key(data) -> str:
    """A short hash of JSON-able ``data``: names work-folder entries by what they were computed from."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def bench_task(name: str, config: BenchConfig, world: World) -> BenchTask:
    """Prompt rows, erased names, and each method's concept set and options for one suite task of ``world``."""
    task = world.scale_task(config.scale_concepts) if name == SCALE else world.tasks()[name]
    rows = first_per_group(task.rows(), config.per_group)
    return BenchTask(
        name,
        rows,
        tuple(task.targets),
        lambda m: method_concepts(m, task),
        lambda m: method_options(m, config, name),
        task.params,
    )


def method_concepts(method: str, task: Task) -> ConceptSet:
    """What ``method`` erases on a task: a method that maps its targets onto a pool (its config's
    ``MAPS_ONTO_POOL``, specs/etc.md §3) maps onto the task's concepts to keep; the others map onto the task's
    anchor and preserve those concepts."""
    if getattr(get_method(method).config_class, "MAPS_ONTO_POOL", False):
        return ConceptSet.build(list(task.targets), "", list(task.preserve))
    return task_concepts(task)


def method_options(method: str, config: BenchConfig, task: str) -> dict:
    """A method that keeps work of its own (its config has ``work_dir``) keeps it in the bench's work folder."""
    if method == "original":
        return {}
    config_fields = {f.name for f in fields(get_method(method).config_class)}
    return {"work_dir": str(config.work / method / task)} if "work_dir" in config_fields else {}


def method_label(method: str) -> str:
    """How tables name a method (its registered label), or the original model."""
    return method if method == "original" else get_method(method).label


def progression(stages: list[dict]) -> list[dict] | None:
    """An edit's closed-form stages (those with a gap) when there are several: the report's per-stage plot."""
    closed_form = [s for s in stages if "gap" in s]
    return closed_form if len(closed_form) > 1 else None


def method_folder(method: str, options: dict) -> str:
    """The work-folder name of a method's edit and attack cells: a resumed run reuses them only under the same
    config (a changed default makes a new edit, next to the old one)."""
    if method == "original":
        return method
    return f"{method}-{key(asdict(method_config(method, options)[1]))}"


def cached_edit(folder: Path, make: Callable[[], Artifact]) -> Artifact:
    """The edit saved in ``folder`` by an earlier run, or a new one, saved there (also in place of a saved edit that
    no longer loads: damaged, or written by an older erasekit; the work folder is the bench's own)."""
    if (folder / "manifest.json").is_file():
        try:
            return load_artifact(folder)
        except UserError:
            pass
    artifact = make()
    save_artifact(artifact, folder, overwrite=True)
    return artifact


def cached_cell(path: Path, make: Callable[[], dict]) -> dict:
    """The attack record an earlier run saved at ``path`` when it finished (judged, or not applicable), else a
    new one, saved: a failed, unreadable or status-less (older) record is never reused as a result."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    if isinstance(record, dict) and record.get("status") in (OK, NOT_APPLICABLE):
        return record
    record = make()
    write_json(path, record)
    return record


def asr_cell(record: dict) -> float | FailedCell | None:
    """An attack record's table cell: its ASR, "failed" (with the reason) when it failed to run, None (–) when it
    does not apply."""
    return FailedCell(record.get("reason", "")) if record.get("status") == FAILED else record["asr"]


def asr_text(record: dict) -> str:
    if record.get("status") == FAILED:
        return f"failed ({record.get('reason', '')})"
    return "n/a" if record["asr"] is None else f"{record['asr']:.3f}"


def grid_sample(images: np.ndarray, rows: list[PromptRow]) -> np.ndarray:
    """The first GRID_IMAGES target and GRID_IMAGES preserve images, targets first."""
    pick = [i for i, r in enumerate(rows) if r.role == "target"][:GRID_IMAGES]
    pick += [i for i, r in enumerate(rows) if r.role == "preserve"][:GRID_IMAGES]
    return images[pick]


def bench_world(backbone) -> World:
    """The backbone's world: the bench's tasks, protocol and judge come from it."""
    world = world_of(backbone)
    if world is None:
        raise UserError("the bench runs on a model with a world of its own (ground truth to judge by): shapeworld")
    return world


def run_bench(config: BenchConfig, backbone, classifier=None, progress: Callable[[str], None] = print) -> dict:
    """Every task x method x attack; returns the results record (table rows, attack rows, grids as arrays).
    ``classifier``: the world protocol's measuring instrument (None: the shipped one)."""
    world = bench_world(backbone)
    config.check(world)
    config.settings = config.settings.resolved(backbone)  # the model's steps / guidance where none were given
    tasks = {name: bench_task(name, config, world) for name in config.tasks}
    for task in tasks.values():  # before any work: every method judged on phrasings it never fitted
        for method in config.methods:
            prompts = [r.prompt for r in task.rows]
            check_heldout(backbone, task.concepts(method), method, task.options(method), prompts)
    results: dict = {"table": [], "attacks": [], "grids": {}, "stages": {}}
    protocol = world.protocol(classifier)
    for task in tasks.values():
        run_task(task, config, backbone, protocol, results, progress)
    return results


def run_task(task: BenchTask, config: BenchConfig, backbone, protocol, results: dict, progress) -> None:
    """The original model and every method on one task, each evaluated and attacked; rows added to ``results``."""
    edits = config.work / f"{task.name}-{key(task.params)}"  # an edit depends on the task's concepts only
    cells = edits / f"prompts-{key([config.per_group, asdict(config.settings)])}"
    original = generate_rows(backbone, task.rows, config.settings)
    base_metrics, _, _ = protocol.evaluate(backbone, task.rows, config.settings, base=original)
    results["table"].append({"task": task.name, **table_row("original", base_metrics, None)})
    results["grids"][(task.name, "original")] = grid_sample(original.images, original.rows)
    targets = [r for r in task.rows if r.role == "target"]
    preserve = [r for r in task.rows if r.role == "preserve"]
    judge = protocol.judge(task.rows)
    for method in ("original", *config.methods):
        edit, folder = None, method_folder(method, task.options(method))
        if method != "original":
            edit = cached_edit(
                edits / folder / "edit",
                lambda m=method, t=task: erase_to_artifact(backbone, t.concepts(m), m, t.options(m)),
            )
            evaluate_edit(task, method, edit, original, config, backbone, protocol, results, progress)
        context = AttackContext(backbone, judge, config.settings, targets, task.names, edit, 0, preserve)
        results["attacks"].append(attack_row(task.name, method, context, config, cells / folder, progress))


def evaluate_edit(task, method, edit, original, config, backbone, protocol, results: dict, progress) -> None:
    """One method's edit evaluated on a task: its table row, image grid and (a progressive edit's) stages."""
    label = method_label(method)
    metrics, edited, _ = protocol.evaluate(backbone, task.rows, config.settings, edit=edit, base=original)
    results["table"].append({"task": task.name, **table_row(label, metrics, edit)})
    results["grids"][(task.name, label)] = grid_sample(edited.images, edited.rows)
    if (stages := progression(edit.metrics.get("stages") or [])) is not None:
        results["stages"].setdefault(task.name, {"method": label, "stages": stages})
    progress(f"{task.name} / {label}: Acc_e {metrics['overall']['acc_e']:.3f}")


def attack_row(task: str, method: str, context: AttackContext, config: BenchConfig, cells: Path, progress) -> dict:
    """Every attack on one model (its cell reused when an earlier run finished it): ASR cells and records."""
    row = {"task": task, "method": method_label(method)}
    for attack in config.attacks:
        budget = asdict(budget_for(attack, config.budgets.get(attack)))
        outcome = cached_cell(
            cells / f"attack-{attack}-{key(budget)}.json",
            lambda a=attack, c=context: run_attack(a, c, config.budgets.get(a)).summary(),
        )
        row[attack] = asr_cell(outcome)
        row[f"{attack}_detail"] = outcome
        progress(f"{task} / {row['method']} / {attack}: ASR {asr_text(outcome)} ({outcome['seconds']:.0f} s)")
    return row


TABLE_COLUMNS = ("task", "method", "acc_e", "acc_s", "acc_s_relative", "h", "sw_fid", "edit_seconds")


def comparison_rows(results: dict) -> list[dict]:
    """One row per task x method: the protocol's numbers, then the ASR of every attack ("failed" when it failed)."""
    asr = {(a["task"], a["method"]): a for a in results["attacks"]}
    rows = []
    for row in results["table"]:
        attacks = asr[row["task"], row["method"]]
        asrs = {f"ASR {name}": asr_cell(attacks[f"{name}_detail"]) for name in SUITE_ATTACKS if name in attacks}
        rows.append({k: row.get(k) for k in TABLE_COLUMNS} | asrs)
    return rows


def results_markdown(results: dict, config: BenchConfig, command: str, seconds: float) -> str:
    rows = comparison_rows(results)
    budgets = {a: asdict(budget_for(a, config.budgets.get(a))) for a in config.attacks}
    return "\n".join(
        [
            "# erasekit bench — ShapeWorld: methods x tasks x attacks",
            "",
            f"Generated by `{command}` in {seconds / 60:.1f} min on {machine()}.",
            "",
            "Acc_e: target prompts whose images still show the concept (lower is better). Acc_s: preserve prompts",
            "drawn as asked (higher is better); relative = over the original model on the same prompts. H: harmonic",
            "mean of 1 - Acc_e and Acc_s. SW-FID: classifier-feature FID of the preserve images against renders.",
            "ASR: fraction of attack images showing the target concept (the classifier reads every factor the",
            "target names); on the *original* row it shows the attack can draw the concept at all, on the",
            "*prompt filter* row that it gets past an erasure which only rewrites prompts. Module removal does",
            "not apply to the original model (–); *failed*: the attack did not run to a judgeable result (listed",
            "below), which says nothing about the erasure.",
            "",
            markdown_table(rows),
            "",
            *failure_lines(results),
            f"Prompts: the first {config.per_group} of every prompt group of each task "
            f"({', '.join(config.tasks)}); scale = {config.scale_concepts} triple concepts at once.",
            f"Sampling: {config.settings.steps} DDIM steps, guidance {config.settings.guidance}, one image per prompt.",
            "",
            "Attack budgets:",
            "",
            *[f"- {name}: {', '.join(f'{k}={v}' for k, v in b.items())}" for name, b in budgets.items()],
            "",
        ]
    )


def failure_lines(results: dict) -> list[str]:
    """The Markdown list of attacks that failed to run, with their reasons (none: no lines)."""
    failed = [
        f"- {row['task']} / {row['method']} / {name}: {row[f'{name}_detail'].get('reason', '')}"
        for row in results["attacks"]
        for name in SUITE_ATTACKS
        if name in row and row[f"{name}_detail"].get("status") == FAILED
    ]
    return ["Failed to run:", "", *failed, ""] if failed else []


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {device}"


def bench_command(argv: list[str]) -> str:
    return shlex.join(["erasekit", "bench", *argv])


def scale_results(path: Path | None) -> list[dict]:
    """The rows of a scale benchmark's record (benchmarks/etc_scale.py writes docs/etc_scale.json) for the report's
    erasure-against-concepts plot; none without a file."""
    if path is None:
        return []
    try:
        rows = json.loads(read_text(path, "scale results file"))["rows"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a scale benchmark record (a JSON object with 'rows')") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: 'rows' must be a list of objects")
    return rows

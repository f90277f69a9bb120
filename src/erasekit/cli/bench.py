"""erasekit bench."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from erasekit.cli.common import Device, Dtype, Overwrite, app, budget_options, console, load_model, on_main
from erasekit.errors import UserError
from erasekit.utils.io import json_text


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="output folder: results.md, results.json, report.html (atomic)")],
    task: Annotated[list[str] | None, typer.Option(help="a task of the world (repeatable; default all)")] = None,
    method: Annotated[list[str] | None, typer.Option(help="a registered method (repeatable; default all)")] = None,
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
    scale_results: Annotated[
        Path | None, typer.Option(help="a scale benchmark's record (docs/etc_scale.json) to plot in the report")
    ] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Methods x tasks x attacks on the ShapeWorld protocol: one comparison table and a report."""
    from erasekit.eval import bench as suite
    from erasekit.eval.generation import EvalSettings
    from erasekit.utils.io import atomic_dir, atomic_file, check_output

    if no_attacks and attack:
        raise UserError("give --attack or --no-attacks, not both")

    check_output(out, overwrite, (work, scale_results))
    if results is not None:
        check_output(results, overwrite, (out, work), flag="--results")
    started, argv = time.time(), sys.argv[sys.argv.index("bench") + 1 :] if "bench" in sys.argv else []
    config = suite.BenchConfig(
        work=work or out.with_name(out.name + ".work"),
        tasks=tuple(task or suite.SUITE_TASKS),
        methods=tuple(method or suite.suite_methods()),
        attacks=() if no_attacks else tuple(attack or suite.SUITE_ATTACKS),
        per_group=per_group,
        scale_concepts=scale_concepts,
        budgets=budget_options(budget or []),
        settings=EvalSettings(steps=steps),
    )
    config.check()
    outcome = suite.run_bench(config, load_model("shapeworld", device=device, dtype=dtype), progress=console.print)
    if not on_main():
        return
    command = suite.bench_command(argv)
    rows = suite.comparison_rows(outcome)
    markdown = suite.results_markdown(outcome, config, command, time.time() - started)
    settings = {"command": command, "config": config.record(), "seconds": round(time.time() - started, 1)}
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "results.md").write_text(markdown)
        record = {k: v for k, v in outcome.items() if k != "grids"} | {"rows": rows, "settings": settings}
        (tmp / "results.json").write_text(json_text(record, default=str))
        (tmp / "report.html").write_text(_report(outcome, rows, config, settings, suite.scale_results(scale_results)))
    if results is not None:
        with atomic_file(results) as handle:
            handle.write(markdown)
    _print_table(rows, config.attacks, out)


def _report(outcome: dict, rows: list[dict], config, settings: dict, scale_rows: list[dict]) -> str:
    """The bench's self-contained HTML page, with the first progressive edit's per-stage plot."""
    from erasekit.eval.comparison import stage_plot
    from erasekit.eval.report import edit_section, render_bench_report

    progressive = next(iter(outcome["stages"].values()), None)  # the first edit with several closed-form stages
    stages = (
        edit_section(progressive["stages"], stage_plot({progressive["method"]: progressive["stages"]}))
        if progressive
        else ""
    )
    return render_bench_report(
        rows, config.attacks, outcome["grids"], stages, scale_rows, settings, settings["command"]
    )


def _print_table(rows: list[dict], attacks: tuple[str, ...], out: Path) -> None:
    from erasekit.eval.report import fmt

    table = Table(title=f"bench → {out} (ASR per attack)")
    columns = {"task": "task", "method": "method", "acc_e": "Acc_e", "acc_s_relative": "Acc_s rel", "h": "H"}
    columns |= {f"ASR {a}": a for a in attacks}
    for key, title in columns.items():
        table.add_column(title, justify="left" if key in ("task", "method") else "right")
    for r in rows:
        table.add_row(*(fmt(r.get(c)) for c in columns))
    console.print(table)

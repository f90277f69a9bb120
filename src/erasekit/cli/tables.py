"""Printed and HTML summaries of edits and evaluations."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from erasekit.cli.common import console, summary_table


def edit_html(artifact) -> str:
    """The closed-form edit's per-stage table and plot for a report (empty without an edit or such stages: ETC's
    stage rows are timings, printed by ``erase``)."""
    from erasekit.eval.comparison import stage_plot
    from erasekit.eval.report import edit_section

    stages = artifact.metrics.get("stages") if artifact is not None else None
    closed_form = [s for s in stages or [] if "gap" in s]
    return edit_section(closed_form, stage_plot({artifact.method: closed_form})) if closed_form else ""


def _listed(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (" …" if len(names) > shown else "")


def default_rows(artifact) -> list[tuple[str, str]]:
    """An edit's summary rows when its method registers no ``describe``: what it erased onto what, what it edited."""
    metrics, concepts = artifact.metrics, artifact.concepts
    rows = [("targets", _listed(concepts["targets"])), ("anchor", repr(concepts["anchors"][0]))]
    rows += [("maps edited", str(len(artifact.weights)))] if artifact.weights else []
    rows += [("plug-ins", str(artifact.plugins))] if artifact.plugins else []
    rows += [("constraint columns", str(metrics["columns"]))] if "columns" in metrics else []
    rows += [("edit seconds", f"{metrics['seconds']:.2f}"), ("peak memory (MiB)", f"{metrics['peak_mib']:.0f}")]
    return rows


def print_timings(stages: list[dict]) -> None:
    """The stages of an edit that reports time and memory per stage."""
    table = Table(title="stages")
    for col in ("stage", "seconds", "peak MiB"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in stages:
        table.add_row(row["stage"], f"{row['seconds']:.1f}", f"{row['peak_mib']:.0f}")
    console.print(table)


def print_erase_summary(method, artifact, out: Path) -> None:
    """After ``erase``: the per-stage table (closed-form residuals, or timings) and the method's summary rows."""
    stages = artifact.metrics.get("stages") or []
    if any("gap" in row for row in stages):
        print_stages(stages)
    elif stages:
        print_timings(stages)
    rows = method.describe(artifact.metrics) if method.describe else default_rows(artifact)
    console.print(summary_table(f"erase ({method.name}) → {out}", rows))


def print_stages(stages: list[dict]) -> None:
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


def group_table(title: str, metrics: dict, keys: tuple[str, ...]) -> Table:
    """One row per prompt group (and "all"), one column per metric key."""
    from erasekit.eval.report import fmt

    table = Table(title=title)
    table.add_column("group")
    for k in keys:
        table.add_column(k, justify="right")
    for name, summary in [("all", metrics["overall"]), *metrics["groups"].items()]:
        table.add_row(name, *(fmt(summary.get(k)) for k in keys))
    return table


def print_metrics(metrics: dict, out: Path) -> None:
    from erasekit.eval.report import fmt

    keys = ("images", "agree_shape", "agree_colour", "agree_pattern", "agree_joint", "acc_e", "acc_s")
    console.print(group_table(f"evaluation → {out}", metrics, keys))
    o = metrics["overall"]
    console.print(
        f"SW-FID {fmt(o.get('sw_fid'))}  SW-KID {fmt(o.get('sw_kid'))}  "
        f"({metrics['timings']['images_per_second']} images/s)"
    )

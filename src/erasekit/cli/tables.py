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


ETC_ANCHOR_LABELS = {
    "boundary": "boundary-anchor",
    "off_plane": "off-plane-anchor",
    "mapping": "mapping-sample",
    "context": "context-token",
}


def print_etc(summary: dict, out: Path) -> None:
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
    console.print(summary_table(f"erase (etc) → {out}", rows))


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

"""Self-contained HTML report of an evaluation (specs/evaluation.md, "Outputs")."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np

from erasekit.eval.grids import image_grid, png_data_uri

SUMMARY_KEYS = (
    "images",
    "agree_shape",
    "agree_colour",
    "agree_pattern",
    "agree_background",
    "agree_joint",
    "acc_e",
    "acc_s",
    "acc_s_relative",
    "h",
    "sw_fid",
    "sw_kid",
    "fidelity",
)


class FailedCell(str):
    """The table cell of an attack that failed to run: reads "failed" (never a number, nor a blank that could
    read as "not run") and carries the reason, shown as the cell's title in HTML."""

    def __new__(cls, reason: str) -> FailedCell:
        cell = super().__new__(cls, "failed")
        cell.reason = reason
        return cell


def plot_text(label) -> str:
    """``label`` as literal text in a matplotlib figure: a user's "$x^2$" is no mathtext (nor a parse error)."""
    return str(label).replace("$", r"\$")


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if 0 < abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return html.escape(str(value))


def table(rows: list[dict], keys: tuple[str, ...], label: str) -> str:
    keys = tuple(k for k in keys if any(r.get(k) is not None for r in rows))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in (label, *keys))
    body = "".join("<tr>" + "".join(table_cell(r.get(k)) for k in ("_label", *keys)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table_cell(value) -> str:
    """One <td>; a failed attack's cell is marked and has its reason as title."""
    if isinstance(value, FailedCell):
        return f'<td class=failed title="{html.escape(value.reason)}">failed</td>'
    return f"<td>{fmt(value)}</td>"


def grid_section(title: str, images: np.ndarray, captions: list[str], limit: int = 32) -> str:
    if len(images) == 0:
        return ""
    uri = png_data_uri(image_grid(images[:limit]))
    listing = "; ".join(html.escape(c) for c in captions[:limit])
    details = f"<details><summary>prompts, in grid order</summary><p class='small'>{listing}</p></details>"
    return f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='{uri}'>" + (details if listing else "")


PAGE_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}
td:first-child{text-align:left}.small{font-size:12px;color:#555;overflow-wrap:anywhere}
pre{white-space:pre-wrap}img{image-rendering:pixelated}td.failed{color:#b00020;font-weight:bold}"""


def page(title: str, body: str) -> str:
    """A self-contained HTML page: every report's head and style, then ``body``."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{PAGE_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>"
    )


def render_report(
    metrics: dict, grids: list[tuple[str, np.ndarray, list[str]]], title: str = "erasekit evaluation", extra: str = ""
) -> str:
    """A self-contained page; ``extra`` is HTML placed after the summary (e.g. an edit's stages and plots)."""
    overall = {"_label": "all", **metrics["overall"]}
    groups = [{"_label": g, **v} for g, v in metrics["groups"].items()]
    concepts = sorted(metrics["concepts"], key=lambda c: (c["role"], c.get("agree_joint") or 0))
    concept_rows = [{"_label": f"{c['concept']} ({c['role']})", **c} for c in concepts[:60]]
    sections = "".join(grid_section(*g) for g in grids)
    concept_table = table(concept_rows, SUMMARY_KEYS[:6] + ("acc_e", "acc_s"), "concept")
    settings = html.escape(json.dumps({k: metrics[k] for k in ("settings", "timings", "versions")}, indent=2))
    return page(
        title,
        f"""<p>Protocol {html.escape(metrics["protocol"]["name"])} v{metrics["protocol"]["version"]}.
Agreement = fraction of images whose classifier reading matches the factor the prompt names; Acc_e on target
prompts (lower is better), Acc_s on preserve prompts (higher is better); SW-FID/KID on classifier features
against rendered images of the same concepts.</p>
<h2>Summary</h2>{table([overall], SUMMARY_KEYS, "")}
{extra}
<h2>Per prompt group</h2>{table(groups, SUMMARY_KEYS, "group")}
<h2>Images</h2>{sections}
<h2>Per concept (worst 60 by joint agreement)</h2>{concept_table}
<h2>Settings</h2><pre>{settings}</pre>""",
    )


def edit_section(stages: list[dict], plot_png: bytes | None = None) -> str:
    """The edit's per-stage table (gap seen, residual left, relative change) and its plot."""
    rows = [
        {"_label": s["stage"], **{k: s[k] for k in ("gap", "residual", "delta", "constraints", "d_in", "maps")}}
        for s in stages
    ]
    plot = f'<img src="data:image/png;base64,{base64.b64encode(plot_png).decode()}">' if plot_png else ""
    return (
        "<h2>Edit stages</h2><p class=small>gap = ‖Y−X‖/‖Y‖ the stage saw; residual = ‖WX−W₀Y‖/‖W₀Y‖ it left; "
        "delta = ‖ΔW‖/‖W‖.</p>"
        + table(rows, ("gap", "residual", "delta", "constraints", "d_in", "maps"), "stage")
        + plot
    )


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def bench_plots(rows: list[dict], attacks: tuple[str, ...], scale_rows: list[dict]) -> list[tuple[str, str]]:
    """(title, PNG data URI): Acc_e against Acc_s per method, ASR per attack and method, erasure against the
    number of concepts (from the scale benchmark's rows, when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    plots = [("Acc_e against Acc_s, per method and task", _erasure_plot(plt, rows, methods, tasks))]
    if attacks:
        plots.append(("attack success rate per attack, method and task", _asr_plot(plt, rows, attacks, methods, tasks)))
    if scale_rows:
        title = "erasure against the number of concepts (docs/etc_scale.json)"
        plots.append((title, _scale_plot(plt, scale_rows)))
    return plots


def _erasure_plot(plt, rows: list[dict], methods: list[str], tasks: list[str]) -> str:
    markers = dict(zip(tasks, "osD^v<>", strict=False))
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, method in enumerate(methods):
        for r in (r for r in rows if r["method"] == method and r.get("acc_s") is not None):
            ax.scatter(r["acc_e"], r["acc_s"], color=f"C{i}", marker=markers[r["task"]], s=50)
        ax.scatter([], [], color=f"C{i}", label=plot_text(method))
    for task, marker in markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=plot_text(f"task {task}"))
    ax.set(xlabel="Acc_e (lower: erased)", ylabel="Acc_s (higher: preserved)", xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("erasure against preservation", fontsize=10)
    fig.tight_layout()
    return _closed_png(plt, fig)


def _asr_plot(plt, rows: list[dict], attacks: tuple[str, ...], methods: list[str], tasks: list[str]) -> str:
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), squeeze=False, sharey=True)
    width = 0.8 / max(len(methods), 1)
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, method in enumerate(methods):
            r = next((r for r in rows if r["task"] == task and r["method"] == method), {})
            values = [r.get(f"ASR {a}") for a in attacks]
            where = np.arange(len(attacks)) + i * width
            ax.bar(where, [asr_height(v) for v in values], width, color=f"C{i}", label=plot_text(method))
            for x in where[[v == "failed" for v in values]]:  # a FailedCell, or one read back from JSON
                ax.text(x, 0.02, "failed", rotation=90, ha="center", va="bottom", fontsize=6, color=f"C{i}")
        ticks = [plot_text(a) for a in attacks]
        ax.set_xticks(np.arange(len(attacks)) + 0.4 - width / 2, ticks, rotation=40, ha="right", fontsize=7)
        ax.set_title(plot_text(f"task {task}"), fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("attack success rate")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return _closed_png(plt, fig)


def _scale_plot(plt, scale_rows: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, label in enumerate(dict.fromkeys(r["method"] for r in scale_rows)):
        mine = sorted((r for r in scale_rows if r["method"] == label), key=lambda r: r["concepts"])
        n = [r["concepts"] for r in mine]
        ax.plot(n, [r["acc_e"] for r in mine], marker="o", color=f"C{i}", label=plot_text(f"{label} Acc_e"))
        ax.plot(
            n,
            [r.get("acc_s_heldout_relative") for r in mine],
            marker="s",
            ls="--",
            color=f"C{i}",
            label=plot_text(f"{label} held-out Acc_s (relative)"),
        )
    ax.set(xscale="log", xlabel="concepts erased at once", ylim=(-0.03, 1.1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _closed_png(plt, fig)


def _closed_png(plt, fig) -> str:
    uri = _png(fig)
    plt.close(fig)
    return uri


def asr_height(value) -> float:
    """A bar's height: the ASR, or NaN (no bar) for an attack that does not apply or failed (marked apart)."""
    return value if isinstance(value, float | int) else np.nan


def render_bench_report(
    rows: list[dict],
    attacks: tuple[str, ...],
    grids: dict[tuple[str, str], np.ndarray],
    stages_html: str,
    scale_rows: list[dict],
    settings: dict,
    command: str,
) -> str:
    """The bench's self-contained page: the comparison table, plots, ``stages_html`` (a progressive edit's stages, from
    ``edit_section``) and before/after grids."""
    keys = tuple(k for k in rows[0] if k not in ("task", "method")) if rows else ()
    table_rows = [{"_label": f"{r['task']} / {r['method']}", **r} for r in rows]
    plots = "".join(
        f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='{uri}'>"
        for title, uri in bench_plots(rows, attacks, scale_rows)
    )
    sections = []
    for task in dict.fromkeys(t for t, _ in grids):
        sections.append(
            f"<h3>task {html.escape(task)}</h3><p class=small>first row(s): target prompts; then "
            "preserve prompts (neighbours first), the same prompts and seeds for every model.</p>"
        )
        for (t, label), images in grids.items():
            if t == task and len(images):
                sections.append(grid_section(f"{task} — {label}", images, [], limit=len(images)))
    return page(
        "erasekit bench — ShapeWorld",
        f"""<p class=small>{html.escape(command)}</p>
<h2>Comparison</h2>{table(table_rows, keys, "task / method")}
<h2>Plots</h2>{plots}
{stages_html}
<h2>Before and after</h2>{"".join(sections)}
<h2>Settings</h2><pre>{html.escape(json.dumps(settings, indent=2))}</pre>""",
    )

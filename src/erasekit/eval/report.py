"""Self-contained HTML report of an evaluation (specs/evaluation.md, "Outputs")."""

from __future__ import annotations

import base64
import html
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
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(k))}</td>" for k in ("_label", *keys)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def grid_section(title: str, images: np.ndarray, captions: list[str], limit: int = 32) -> str:
    if len(images) == 0:
        return ""
    uri = png_data_uri(image_grid(images[:limit]))
    listing = "; ".join(html.escape(c) for c in captions[:limit])
    return (
        f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='{uri}'>"
        f"<details><summary>prompts, in grid order</summary><p class='small'>{listing}</p></details>"
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
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}}th{{background:#f3f3f3}}
td:first-child{{text-align:left}}.small{{font-size:12px;color:#555}}img{{image-rendering:pixelated}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Protocol {html.escape(metrics["protocol"]["name"])} v{metrics["protocol"]["version"]}.
Agreement = fraction of images whose classifier reading matches the factor the prompt names; Acc_e on target
prompts (lower is better), Acc_s on preserve prompts (higher is better); SW-FID/KID on classifier features
against rendered images of the same concepts.</p>
<h2>Summary</h2>{table([overall], SUMMARY_KEYS, "")}
{extra}
<h2>Per prompt group</h2>{table(groups, SUMMARY_KEYS, "group")}
<h2>Images</h2>{sections}
<h2>Per concept (worst 60 by joint agreement)</h2>{concept_table}
<h2>Settings</h2><pre>{settings}</pre>
</body></html>"""


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

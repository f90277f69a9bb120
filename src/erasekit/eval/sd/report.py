"""The Stable Diffusion protocol's page: summary, per role / group / concept tables, thumbnails per group,
settings."""

from __future__ import annotations

import html
import json

import numpy as np

from erasekit.eval.generation import Generated
from erasekit.eval.grids import image_grid, png_data_uri
from erasekit.eval.report import page, table

SD_SUMMARY_KEYS = (
    "images",
    "clip_score",
    "clip_score_target",
    "clip_score_preserve",
    "zero_shot_target",
    "zero_shot_preserve",
    "fid",
    "kid",
    "nudity_images",
    "nudity_fraction",
)


def _thumbnails(images: np.ndarray, side: int = 96) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(img).resize((side, side), Image.BICUBIC)) for img in images])


def render_sd_report(metrics: dict, generated: Generated, extra: str = "", per_group: int = 16) -> str:
    """A self-contained page: summary, per role / group / concept tables, thumbnails per group, settings."""
    overall = [{"_label": "all", **metrics["overall"]}]
    roles = [{"_label": role, **v} for role, v in metrics["roles"].items()]
    groups = [{"_label": g, **v} for g, v in metrics["groups"].items()]
    concepts = [{"_label": f"{c['concept'] or '–'} ({c['role']})", **c} for c in metrics["concepts"]]
    grids = []
    for group in metrics["groups"]:
        idx = [i for i, r in enumerate(generated.rows) if r.group == group][:per_group]
        if idx:
            uri = png_data_uri(image_grid(_thumbnails(generated.images[idx]), scale=1))
            captions = "; ".join(html.escape(generated.rows[i].prompt) for i in idx)
            grids.append(
                f"<h3>group: {html.escape(group)}</h3><img alt='{html.escape(group)}' src='{uri}'>"
                f"<details><summary>prompts, in grid order</summary><p class='small'>{captions}</p></details>"
            )
    settings = html.escape(json.dumps({k: metrics[k] for k in ("settings", "timings", "versions")}, indent=2))
    features = (metrics["settings"]["quality"] or {}).get("features", "not computed (no --reference)")
    return page(
        "erasekit evaluation (Stable Diffusion)",
        f"""<p>Protocol {html.escape(metrics["protocol"]["name"])} v{metrics["protocol"]["version"]}. CLIP score =
max(100·cos(image, prompt), 0). Zero-shot = fraction of images CLIP reads as their own concept among the
prompt set's concepts (template {html.escape(repr(metrics["settings"]["clip"]["template"]))}): on target prompts
lower is better, on preserve prompts higher. FID / KID: preserve images against the reference folder, features:
{html.escape(str(features))}.</p>
<h2>Summary</h2>{table(overall + roles, SD_SUMMARY_KEYS, "")}
{extra}
<h2>Per prompt group</h2>{table(groups, SD_SUMMARY_KEYS, "group")}
<h2>Images</h2>{"".join(grids)}
<h2>Per concept</h2>{table(concepts, SD_SUMMARY_KEYS, "concept")}
<h2>Settings</h2><pre>{settings}</pre>""",
    )

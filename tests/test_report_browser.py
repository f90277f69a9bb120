"""report.html in headless Chromium: every image is loaded and visible, and the screenshot shows them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from erasekit.errors import UserError
from erasekit.eval.browser import DEFAULT_CHROMIUM, check_report, find_chromium
from erasekit.eval.comparison import stage_plot
from erasekit.eval.grids import image_grid
from erasekit.eval.report import edit_section, render_report
from erasekit.world.render import render

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which(DEFAULT_CHROMIUM) is None,
    reason=f"{DEFAULT_CHROMIUM} missing: `apt-get install chromium` (.ci/run installs it)",
)


def synthetic_metrics() -> dict:
    """A metrics.json of the shape world/protocol.py evaluate writes (numbers made up)."""

    def summary(images: int, acc_e, acc_s) -> dict:
        factors = {f"agree_{f}": 0.8 for f in ("shape", "colour", "pattern", "background", "joint")}
        return {"images": images, **factors, "acc_e": acc_e, "acc_s": acc_s}

    overall = summary(16, 0.05, 0.9) | {"h": 0.92, "acc_s_relative": 0.97, "sw_fid": 0.12, "sw_kid": 0.001}
    return {
        "protocol": {"name": "shapeworld", "version": 1},
        "settings": {"num_images": 1, "steps": 25, "guidance": 5.0, "edit": None},
        "overall": overall | {"fidelity": 0.8},
        "groups": {"target": summary(8, 0.05, None), "preserve": summary(8, None, 0.9)},
        "concepts": [{"concept": "star", "role": "target", **summary(8, 0.05, None)}]
        + [{"concept": "heart", "role": "preserve", **summary(8, None, 0.9)}],
        "timings": {"generate_seconds": 1.0, "images": 16, "images_per_second": 16.0, "total_seconds": 2.0},
        "versions": {"erasekit": "test"},
    }


def grids() -> list[tuple[str, np.ndarray, list[str]]]:
    before, _ = render(np.random.default_rng(0), 16)
    after, _ = render(np.random.default_rng(1), 16)
    return [("before", before, [f"prompt {i}" for i in range(16)]), ("after", after, [f"p {i}" for i in range(16)])]


def stages() -> list[dict]:
    return [
        {
            "stage": f"text layer {i}",
            "gap": 0.5 / (i + 1),
            "residual": 1e-9,
            "delta": 0.01 * i,
            "constraints": 40,
            "d_in": 384,
            "maps": 2,
        }
        for i in range(4)
    ]


def crop(shot: Image.Image, box: list[float], dx: int = 0, dy: int = 0) -> np.ndarray:
    x, y, w, h = (round(v) for v in box)
    return np.asarray(shot.convert("RGB"))[y + dy : y + dy + h, x + dx : x + dx + w].astype(np.int16)


def best_match(shot: Image.Image, box: list[float], expected: np.ndarray) -> tuple[np.ndarray, float]:
    """The crop at the box (or one pixel off it: fractional boxes snap) closest to ``expected``."""
    crops = [crop(shot, box, dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    crops = [c for c in crops if c.shape == expected.shape]
    assert crops, f"the image at {box} is not shown at its natural size {expected.shape}"
    return min(((c, float(np.abs(c - expected).mean())) for c in crops), key=lambda t: t[1])


def far_from_white(pixels: np.ndarray) -> float:
    """Fraction of pixels whose darkest channel is below 200 (anything but paper)."""
    return float((pixels.min(axis=-1) < 200).mean())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("report")
    g = grids()
    page = render_report(
        synthetic_metrics(), g, title="browser check", extra=edit_section(stages(), stage_plot({"erasepro": stages()}))
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html", g


def test_report_images_load_show_and_appear_in_the_screenshot(report, tmp_path):
    path, g = report
    result = check_report(path, tmp_path / "shot.png")
    assert result["engine"] == "playwright"
    assert result["images"] == 3  # the stage plot and two grids
    assert result["loaded"] == result["visible"] == 3, result["problems"]
    assert result["problems"] == []
    shot = Image.open(result["screenshot"])
    assert shot.size == (result["page_width"], result["page_height"])

    plot, *grid_images = result["details"]
    for (title, images, _), d in zip(g, grid_images, strict=True):
        expected = np.asarray(image_grid(images)).astype(np.int16)
        assert d["alt"] == title and tuple(d["natural"]) == expected.shape[1::-1]
        # the screenshot shows the rendered grid itself, at its natural size: the same colours at the same places
        seen, error = best_match(shot, d["box"], expected)
        assert error < 4, error
        assert far_from_white(seen) > 0.5
    seen_plot = crop(shot, plot["box"])
    assert seen_plot.size and 0.01 < far_from_white(seen_plot) < 0.5  # axes, lines and labels on white
    blue = np.array([31, 119, 180])  # matplotlib's first line colour, the plotted series
    assert (np.abs(seen_plot - blue).max(axis=-1) < 30).sum() > 100
    # the rest of the page is mostly paper: the images are not just a grey screenshot
    assert far_from_white(np.asarray(shot.convert("RGB"))) < 0.5


def test_broken_image_is_reported_not_loaded(report, tmp_path):
    path, _ = report
    broken = tmp_path / "broken.html"
    page = path.read_text(encoding="utf-8")
    broken.write_text(
        page.replace(
            "<h2>Images</h2>", "<h2>Images</h2><img alt='corrupt' src='data:image/png;base64,iVBORw0KGgoAAAAbroken'>"
        )
    )
    cli = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "check_report.py"), str(broken), "--out", str(tmp_path / "b.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1, cli.stderr
    result = json.loads(cli.stdout)
    assert (result["images"], result["loaded"]) == (4, 3)
    assert [p["alt"] for p in result["problems"]] == ["corrupt"]
    assert (tmp_path / "b.png").is_file()


def test_missing_chromium_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="apt-get install chromium") as e:
        find_chromium(tmp_path / "no-chromium")
    assert "\n" not in str(e.value)

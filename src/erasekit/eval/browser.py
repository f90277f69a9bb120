"""Open an HTML report in headless Chromium: are its images loaded and visible? (plus a full-page screenshot).

The system Chromium (Debian: ``apt-get install chromium``) is driven through the PyPI package
``playwright`` (the ``test`` extra) with ``executable_path`` -- Playwright's own browser download is never
used. Without playwright, ``chromium --headless --screenshot`` still writes the PNG, but the images cannot
be inspected: ``loaded`` and ``visible`` are then ``None``.
"""

from __future__ import annotations

import html.parser
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from erasekit.errors import UserError

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = (1280, 900)
# Per <img>: decoded or not, natural size, box in page (document) coordinates, and whether it shows.
IMAGES_JS = """async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  return imgs.map((img, index) => {
    const r = img.getBoundingClientRect();
    const style = getComputedStyle(img);
    const shown = style.display !== 'none' && style.visibility !== 'hidden' && parseFloat(style.opacity) > 0;
    return {
      index, alt: img.alt, src: img.getAttribute('src') ? img.getAttribute('src').slice(0, 60) : '',
      loaded: img.complete && img.naturalWidth > 0,
      natural: [img.naturalWidth, img.naturalHeight],
      box: [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height],
      visible: shown && r.width > 0 && r.height > 0,
    };
  });
}"""
PAGE_JS = """() => [Math.max(document.documentElement.scrollWidth, document.body ? document.body.scrollWidth : 0),
  Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)]"""


def find_chromium(executable: str | os.PathLike | None = None) -> str:
    """The Chromium binary: ``executable``, else $ERASEKIT_CHROMIUM, /usr/bin/chromium or `chromium` on PATH."""
    candidates = [executable] if executable else [os.environ.get("ERASEKIT_CHROMIUM"), DEFAULT_CHROMIUM]
    for candidate in [c for c in candidates if c] + ([] if executable else ["chromium", "chromium-browser"]):
        found = shutil.which(str(candidate))
        if found:
            return found
    where = f"{executable}" if executable else f"{DEFAULT_CHROMIUM} (or `chromium` on PATH)"
    raise UserError(f"Chromium not found at {where}: install it with `apt-get install chromium`")


def check_report(
    html_path: str | os.PathLike,
    screenshot_path: str | os.PathLike,
    executable: str | os.PathLike | None = None,
    timeout_s: float = 60.0,
) -> dict:
    """Open ``html_path`` in headless Chromium; write a full-page PNG to ``screenshot_path``.

    Returns ``images`` (number of <img>), ``loaded`` (complete and naturalWidth > 0), ``visible`` (non-zero
    box, not display:none / hidden), ``page_width`` / ``page_height`` (CSS px; the screenshot is 1 px per
    CSS px), ``problems`` (the images not loaded or not visible), ``details`` (every image: alt, start of
    its src, natural size, box [x, y, w, h] in page coordinates), ``screenshot``, ``engine`` and ``chromium``.
    """
    page = Path(html_path)
    if not page.is_file():
        raise UserError(f"no such report: {page}")
    shot = Path(screenshot_path)
    shot.parent.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium(executable)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return _check_with_cli(page, shot, chromium, timeout_s)
    return _check_with_playwright(page, shot, chromium, timeout_s)


def _summary(details: list[dict]) -> dict:
    return {
        "images": len(details),
        "loaded": sum(d["loaded"] for d in details),
        "visible": sum(d["visible"] for d in details),
    }


def _check_with_playwright(page: Path, shot: Path, chromium: str, timeout_s: float) -> dict:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="erasekit-chromium-") as profile, sync_playwright() as p:
        try:  # a persistent context is how Playwright takes a (fresh) user-data dir
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                headless=True,
                args=list(CHROMIUM_ARGS),
                viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]},
                device_scale_factor=1,
                timeout=timeout_s * 1000,
            )
        except PlaywrightError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"Chromium at {chromium} did not start: {first}") from e
        try:
            tab = context.pages[0] if context.pages else context.new_page()
            tab.goto(page.resolve().as_uri(), wait_until="load", timeout=timeout_s * 1000)
            details = tab.evaluate(IMAGES_JS)
            width, height = tab.evaluate(PAGE_JS)
            tab.screenshot(path=str(shot), full_page=True, timeout=timeout_s * 1000)
            version = context.browser.version if context.browser else None
        finally:
            context.close()
    return {
        **_summary(details),
        "page_width": int(width),
        "page_height": int(height),
        "problems": [d for d in details if not (d["loaded"] and d["visible"])],
        "details": details,
        "screenshot": str(shot),
        "engine": "playwright",
        "chromium": version,
    }


class _ImgCounter(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        self.count += tag == "img"


def _check_with_cli(page: Path, shot: Path, chromium: str, timeout_s: float) -> dict:
    """No playwright: only the screenshot (a fixed window; the page's height is unknown) and the <img> count."""
    counter = _ImgCounter()
    counter.feed(page.read_text(encoding="utf-8", errors="replace"))
    width, height = VIEWPORT[0], 4000
    with tempfile.TemporaryDirectory(prefix="erasekit-chromium-") as profile:
        cmd = [
            chromium,
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={shot.resolve()}",
            page.resolve().as_uri(),
        ]
        try:
            subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise UserError(f"Chromium at {chromium} did not finish the screenshot in {timeout_s:g} s") from e
    if not shot.is_file():
        raise UserError(f"Chromium at {chromium} wrote no screenshot to {shot}")
    return {
        "images": counter.count,
        "loaded": None,
        "visible": None,
        "page_width": width,
        "page_height": None,
        "problems": [],
        "details": [],
        "screenshot": str(shot),
        "engine": "chromium-cli (install playwright to inspect images)",
        "chromium": None,
    }

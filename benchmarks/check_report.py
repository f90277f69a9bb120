"""Open a report in headless Chromium and check that every image in it is loaded and visible.

Run: make report-check   (after `make demo`; or .venv/bin/python benchmarks/check_report.py REPORT.html --out SHOT.png)
Prints a JSON object: images, loaded, visible, page size, the images with a problem, and the path of a
full-page screenshot. Exit status 1 if any image is not loaded or not visible (or could not be inspected:
playwright missing), 2 on bad input (no report, no Chromium).
"""

from __future__ import annotations

import argparse
import json
import sys

from erasekit.errors import UserError
from erasekit.eval.browser import check_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="the report.html to open")
    parser.add_argument("--out", default=None, help="full-page screenshot PNG (default: next to the report)")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default /usr/bin/chromium)")
    parser.add_argument("--details", action="store_true", help="also print every image's box and natural size")
    args = parser.parse_args(argv)
    out = args.out or str(args.report).removesuffix(".html") + ".screenshot.png"
    try:
        result = check_report(args.report, out, executable=args.chromium)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.details:
        result.pop("details")
    print(json.dumps(result, indent=2))
    n = result["images"]
    ok = n > 0 and result["loaded"] == n and result["visible"] == n
    if not ok:
        print(
            f"FAIL: {n} images, {result['loaded']} loaded, {result['visible']} visible ({args.report})", file=sys.stderr
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

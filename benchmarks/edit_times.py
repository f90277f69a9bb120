"""Edit time of UCE, ErasePro and ErasePro --no-progressive on the ShapeWorld tasks, timed fairly.

`erasure_tasks.py` times each method once, in the order it runs them, so the first one also pays the
process's warm-up. Here every method is run once untimed, then the methods take turns for
``--repeats`` rounds, and each one's fastest round is reported (the machine's speed varies by tens of
percent from minute to minute; the minimum is the least disturbed figure). Writes docs/edit_times.md
and docs/edit_times.json. Run:
    .venv/bin/python benchmarks/edit_times.py [--tasks instance style unsafe] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from erasekit.backbones.loader import load_backbone
from erasekit.eval.comparison import DEFAULT_RUNS, benchmark_record, erase_with, task_concepts
from erasekit.eval.shapeworld_protocol import EvalSettings
from erasekit.eval.tasks import TASKS
from erasekit.utils.io import atomic_file

DOCS = Path(__file__).resolve().parents[1] / "docs"


def fastest_edit_seconds(backbone, concepts, repeats: int) -> dict[str, float]:
    """Per method label: the fastest of ``repeats`` interleaved rounds, after one untimed warm-up each."""
    for run in DEFAULT_RUNS:
        erase_with(backbone, concepts, run)
    best = {run.label: float("inf") for run in DEFAULT_RUNS}
    for _ in range(repeats):
        for run in DEFAULT_RUNS:
            best[run.label] = min(best[run.label], erase_with(backbone, concepts, run).metrics["seconds"])
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    backbone, started = load_backbone("shapeworld"), time.time()
    times = {name: fastest_edit_seconds(backbone, task_concepts(TASKS[name]), args.repeats) for name in args.tasks}
    record = benchmark_record("benchmarks/edit_times.py", sys.argv[1:], EvalSettings(), started, edit_seconds=times)
    labels = [run.label for run in DEFAULT_RUNS]
    lines = [
        "# Edit time on the ShapeWorld tasks",
        "",
        f"Regenerate with `{record['command']}` ({record['seconds']:.0f} s on the 2-core CPU; shipped denoiser at "
        f"{record['denoiser_steps']} steps). Each method is run once untimed, then the methods take turns for "
        f"{args.repeats} rounds; the table gives each one's fastest round in seconds, and ErasePro / UCE "
        "(bar ≤ 1.5).",
        "",
        "| task | " + " | ".join(labels) + " | ErasePro / UCE |",
        "|---|" + "---|" * (len(labels) + 1),
    ]
    for name, best in times.items():
        ratio = best["ErasePro"] / best["UCE"]
        cells = " | ".join(f"{best[label]:.3f}" for label in labels)
        lines.append(f"| {name} | {cells} | {ratio:.3f} ({'met' if ratio <= 1.5 else 'NOT met'}) |")
    print("\n".join(lines))
    DOCS.mkdir(exist_ok=True)
    with atomic_file(DOCS / "edit_times.json") as handle:
        handle.write(json.dumps(record, indent=2) + "\n")
    with atomic_file(DOCS / "edit_times.md") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

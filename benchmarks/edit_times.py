"""Edit time of UCE, ErasePro and ErasePro --no-progressive on the ShapeWorld tasks, timed fairly.

`erasure_tasks.py` times each method once, in the order it runs them, so the first one also pays the
process's warm-up. Here every method is run once untimed, then the methods take turns for
``--repeats`` rounds. Reported: each one's fastest round, and the median over rounds of ErasePro / UCE
within a round (the machine's speed drifts by tens of percent from minute to minute; a ratio of two runs
seconds apart cancels that). Writes docs/edit_times.md and docs/edit_times.json. Run:
    .venv/bin/python benchmarks/edit_times.py [--tasks instance style unsafe] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from erasekit.backbones.loader import load_backbone
from erasekit.eval.comparison import erase_with, save_benchmark, task_concepts
from erasekit.eval.generation import EvalSettings
from erasekit.world.comparison import DEFAULT_RUNS, benchmark_record
from erasekit.world.tasks import TASKS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def edit_seconds(backbone, concepts, repeats: int) -> dict[str, list[float]]:
    """Per method label: its seconds in each of ``repeats`` interleaved rounds, after one untimed warm-up each."""
    for run in DEFAULT_RUNS:
        erase_with(backbone, concepts, run)
    rounds: dict[str, list[float]] = {run.label: [] for run in DEFAULT_RUNS}
    for _ in range(repeats):
        for run in DEFAULT_RUNS:
            rounds[run.label].append(erase_with(backbone, concepts, run).metrics["seconds"])
    return rounds


def paired_ratio(rounds: dict[str, list[float]]) -> float:
    """Median over rounds of ErasePro / UCE within the same round: the two run seconds apart, so the
    machine's slow drifts cancel in each ratio."""
    return statistics.median(p / u for p, u in zip(rounds["ErasePro"], rounds["UCE"], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    backbone, started = load_backbone("shapeworld"), time.time()
    rounds = {name: edit_seconds(backbone, task_concepts(TASKS[name]), args.repeats) for name in args.tasks}
    record = benchmark_record("benchmarks/edit_times.py", sys.argv[1:], EvalSettings(), started, edit_seconds=rounds)
    labels = [run.label for run in DEFAULT_RUNS]
    lines = [
        "# Edit time on the ShapeWorld tasks",
        "",
        f"Regenerate with `{record['command']}` ({record['seconds']:.0f} s on the 2-core CPU; shipped denoiser at "
        f"{record['denoiser_steps']} steps). Each method is run once untimed, then the methods take turns for "
        f"{args.repeats} rounds. The table gives each one's fastest round in seconds, the ratio of the fastest "
        "rounds, and the median over rounds of ErasePro / UCE within a round (the two run seconds apart, so the "
        "machine's drifts of tens of percent cancel); the bar (≤ 1.5) is judged on the paired median.",
        "",
        "| task | " + " | ".join(labels) + " | fastest ErasePro / fastest UCE | paired median ErasePro / UCE |",
        "|---|" + "---|" * (len(labels) + 2),
    ]
    for name, per_round in rounds.items():
        best = {label: min(per_round[label]) for label in labels}
        ratio = paired_ratio(per_round)
        cells = " | ".join(f"{best[label]:.3f}" for label in labels)
        verdict = "met" if ratio <= 1.5 else "NOT met"
        lines.append(f"| {name} | {cells} | {best['ErasePro'] / best['UCE']:.3f} | {ratio:.3f} ({verdict}) |")
    print("\n".join(lines))
    save_benchmark(DOCS, "edit_times", record, "\n".join(lines))


if __name__ == "__main__":
    main()

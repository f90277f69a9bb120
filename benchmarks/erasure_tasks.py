"""Compare UCE, ErasePro and ErasePro --no-progressive on the ShapeWorld erasure tasks.

Writes docs/erasure_tasks.md (tables + the command), docs/erasure_tasks.json (every number) and
docs/erasepro_stages.png (per-stage gap and change). Run:
    .venv/bin/python benchmarks/erasure_tasks.py [--tasks instance style unsafe]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from erasekit.backbones.loader import load_backbone
from erasekit.eval.comparison import markdown_table, save_benchmark, stage_plot
from erasekit.eval.generation import EvalSettings
from erasekit.eval.prompts import load_prompts
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.comparison import benchmark_record, compare
from erasekit.world.tasks import TASKS, prompt_file

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--num-images", type=int, default=2, help="images per prompt (seeds s, s+1, ...)")
    args = parser.parse_args()
    settings = EvalSettings(num_images=args.num_images)
    backbone, classifier = load_backbone("shapeworld"), load_classifier(classifier_dir())
    results, stages, started = {}, {}, time.time()
    for name in args.tasks:
        rows, artifacts, _ = compare(backbone, TASKS[name], load_prompts(prompt_file(name)), classifier, settings)
        results[name] = rows
        stages[name] = {label: a.metrics["stages"] for label, a in artifacts.items()}
        print(f"\n## {name}\n{markdown_table(rows)}", flush=True)
    record = benchmark_record(
        "benchmarks/erasure_tasks.py", sys.argv[1:], settings, started, tasks=results, stages=stages
    )
    first = next(iter(stages.values()))
    sections = [f"## {name}: {TASKS[name].description}\n\n{markdown_table(rows)}\n" for name, rows in results.items()]
    save_benchmark(
        DOCS,
        "erasure_tasks",
        record,
        "# ShapeWorld erasure tasks: UCE vs ErasePro\n\n"
        f"Regenerate with `{record['command']}` (about {record['seconds'] / 60:.0f} min on the 2-core CPU), "
        f"measured on the shipped ShapeWorld denoiser at {record['denoiser_steps']} steps.\n"
        "Acc_e per target group (lower is better), Acc_s on preserve prompts (joint shape+colour+pattern), "
        "`acc_s_relative` = Acc_s / the original model's Acc_s on the same prompts and seeds, "
        "H = harmonic mean of (1 − Acc_e) and Acc_s, `h_relative` uses the relative Acc_s. "
        "Edit time and peak memory (RSS growth) are measured in the same process, one after another.\n\n"
        + "## Bars and claims, checked on these numbers\n\n"
        + "\n".join(findings(results, stages))
        + "\n\n"
        + "\n".join(sections)
        + "\n![ErasePro per-stage gap and change](erasepro_stages.png)\n",
        {"erasepro_stages.png": stage_plot(first)},
    )


def findings(results: dict[str, list[dict]], stages: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Bars and claims checked against the measured numbers (issue 3), one line each."""
    lines = []
    for task, rows in results.items():
        by = {r["method"]: r for r in rows}
        pro, uce, floor = by["ErasePro"], by["UCE"], by["anchor prompts (floor)"]
        explicit = max(pro["acc_e_canonical"], pro["acc_e_complex"])
        lines.append(
            f"- **{task}**: ErasePro Acc_e canonical {pro['acc_e_canonical']:.3f} / complex {pro['acc_e_complex']:.3f} "
            f"(bar ≤ 0.05: {'met' if explicit <= 0.05 else 'NOT met'}; the anchor prompts' own rate, the floor, is "
            f"{floor['acc_e_canonical']:.3f} / {floor['acc_e_complex']:.3f}); H {pro['h']:.3f} (bar ≥ 0.85: "
            f"{'met' if pro['h'] >= 0.85 else 'NOT met'}; with Acc_s relative: {pro['h_relative']:.3f}); "
            f"complex prompts ErasePro {pro['acc_e_complex']:.3f} vs UCE {uce['acc_e_complex']:.3f} "
            f"({'no worse' if pro['acc_e_complex'] <= uce['acc_e_complex'] else 'WORSE'}); edit time ErasePro / UCE = "
            f"{pro['edit_seconds'] / uce['edit_seconds']:.2f} (bar ≤ 1.5; one run each, UCE first: the fair timing, "
            "warmed up, 15 interleaved rounds, is docs/edit_times.md)."
        )
    for task, by_label in stages.items():
        chain = by_label["ErasePro"]
        gaps = [s["gap"] for s in chain[:-1]]
        falls = all(b <= a for a, b in zip(gaps, gaps[1:], strict=False))
        flat = by_label["ErasePro --no-progressive"][-1]
        lines.append(
            f"- **{task}**, progressive claim: text-stage gaps {', '.join(f'{g:.3f}' for g in gaps)} — "
            f"{'fall' if falls else 'do not fall'} monotonically with depth; at the projectors the gap is "
            f"{chain[-1]['gap']:.3f} after the chain vs {flat['gap']:.3f} without it, and ‖ΔW‖/‖W‖ there "
            f"{chain[-1]['delta']:.3f} vs {flat['delta']:.3f}."
        )
    return lines


if __name__ == "__main__":
    main()

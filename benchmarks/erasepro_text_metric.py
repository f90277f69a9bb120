"""How ErasePro's preservation-weighted text stages trade preservation for edit time on one ShapeWorld task:
the plain text stages, the metric from a sample of the preserved prompts (the default: 16), and from all.

Writes docs/erasepro_text_metric.md and .json. Run:
    .venv/bin/python benchmarks/erasepro_text_metric.py [--task style] [--num-images 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from erasekit.backbones.loader import load_backbone
from erasekit.eval.comparison import MethodRun, markdown_table, save_benchmark
from erasekit.eval.generation import EvalSettings
from erasekit.eval.prompts import load_prompts
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.comparison import benchmark_record, compare
from erasekit.world.tasks import TASKS, prompt_file

DOCS = Path(__file__).resolve().parents[1] / "docs"
RUNS = (
    MethodRun("plain text stages", "erasepro", {"weighted_text": False}),
    MethodRun("weighted, 16 preserved prompts (default)", "erasepro", {}),
    MethodRun("weighted, every preserved prompt", "erasepro", {"text_preserve_prompts": None}),
)
COLUMNS = (
    "method",
    "acc_e_canonical",
    "acc_e_bare",
    "acc_e_reordered",
    "acc_e_complex",
    "acc_e_paraphrased",
    "acc_s",
    "acc_s_relative",
    "h",
    "edit_seconds",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="style", choices=list(TASKS))
    parser.add_argument("--num-images", type=int, default=1, help="images per prompt (seeds s, s+1, ...)")
    args = parser.parse_args()
    settings, started = EvalSettings(num_images=args.num_images), time.time()
    backbone, classifier = load_backbone("shapeworld"), load_classifier(classifier_dir())
    rows, _, _ = compare(backbone, TASKS[args.task], load_prompts(prompt_file(args.task)), classifier, settings, RUNS)
    rows = [{k: r.get(k) for k in COLUMNS} for r in rows]
    record = benchmark_record("benchmarks/erasepro_text_metric.py", sys.argv[1:], settings, started, rows=rows)
    text = "\n".join(
        [
            f"# ErasePro's text-stage metric on the ShapeWorld {args.task} task",
            "",
            f"Regenerate with `{record['command']}` ({record['seconds']:.0f} s on the 2-core CPU; shipped denoiser at "
            f"{record['denoiser_steps']} steps, {args.num_images} image(s) per prompt). Edit seconds are one run each, "
            "in table order; docs/edit_times.md has the fair timing of the default.",
            "",
            markdown_table(rows),
        ]
    )
    print(text)
    save_benchmark(DOCS, "erasepro_text_metric", record, text)


if __name__ == "__main__":
    main()

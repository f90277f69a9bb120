"""ETC on a concept given by example prompts (issue 20, item 5): erase the skull from the unsafe task with
`--target-prompts benchmarks/tasks/unsafe_examples.txt`, once per choice of prompt states (end-of-text token,
every token, both), and judge on the task's prompts, none of which is an example (checked). The implicit group
(IMPLICIT_SKULL_HELDOUT) is the one that matters: prompts that evoke the skull without naming it.

Writes docs/etc_examples.{md,json}. Run:
    .venv/bin/python benchmarks/etc_examples.py [--states eot tokens both] [--work runs/etc-examples]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from erasekit.backbones.loader import load_backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.eval.comparison import markdown_table, neighbour_accuracy, save_benchmark
from erasekit.eval.generation import EvalSettings, generate_rows
from erasekit.eval.prompts import load_prompts
from erasekit.methods.base import check_heldout, erase_to_artifact
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.comparison import benchmark_record
from erasekit.world.protocol import evaluate
from erasekit.world.tasks import TASKS, examples_file, prompt_file

DOCS = Path(__file__).resolve().parents[1] / "docs"
TASK = "unsafe"


def result_row(states: str, metrics: dict, artifact) -> dict:
    groups, overall = metrics["groups"], metrics["overall"]
    implicit = groups["implicit"]
    acc_s, relative = neighbour_accuracy(groups)
    return {
        "prompt_states": states,
        "acc_e_implicit": implicit["acc_e"],
        "acc_e_implicit_original": implicit["acc_e_original"],
        **{f"acc_e_{g}": v["acc_e"] for g, v in groups.items() if v.get("acc_e") is not None and g != "implicit"},
        "acc_s_neighbour_relative": relative,
        "acc_s_relative": overall.get("acc_s_relative"),
        "h": overall.get("h"),
        "sw_fid": overall.get("sw_fid"),
        "threshold": artifact.metrics.get("threshold"),
        "heldout_target_rewritten": artifact.metrics.get("heldout_target_rewritten"),
        "heldout_pool_rewritten": artifact.metrics.get("heldout_pool_rewritten"),
        "edit_seconds": artifact.metrics["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--states", nargs="+", default=["eot", "tokens", "both"], choices=["eot", "tokens", "both"])
    parser.add_argument("--work", type=Path, default=Path("runs/etc-examples"))
    args = parser.parse_args()
    task, started = TASKS[TASK], time.time()
    backbone, classifier = load_backbone("shapeworld"), load_classifier(classifier_dir())
    rows = load_prompts(prompt_file(TASK))
    examples = tuple(line for line in examples_file(TASK).read_text().splitlines() if line.strip())
    settings = EvalSettings()
    concepts = ConceptSet.build(list(task.targets), "", list(task.preserve))
    options = [{"work_dir": str(args.work), "target_prompts": examples, "prompt_states": s} for s in args.states]
    for option in options:  # every variant, before any work
        check_heldout(backbone, concepts, "etc", option, [r.prompt for r in rows])
    base = generate_rows(backbone, rows, settings, progress=True)
    results = []
    for states, option in zip(args.states, options, strict=True):
        artifact = erase_to_artifact(backbone, concepts, "etc", option)
        metrics, _, _ = evaluate(backbone, rows, classifier, settings, edit=artifact, base=base)
        results.append(result_row(states, metrics, artifact))
        print(markdown_table(results[-1:]), flush=True)
    record = benchmark_record("benchmarks/etc_examples.py", sys.argv[1:], settings, started, rows=results)
    save_benchmark(
        DOCS,
        "etc_examples",
        record,
        "# ETC on a concept given by example prompts: the skull\n\n"
        f"Regenerate with `{record['command']}` ({record['seconds'] / 60:.0f} min on the 2-core CPU). "
        f"The concept is fitted on the {len(examples)} prompts of `benchmarks/tasks/unsafe_examples.txt` "
        f"(a seeded share held out to calibrate θ), mapping pool {', '.join(task.preserve)}; judged on "
        f"`benchmarks/tasks/{TASK}.csv`, one image per prompt ({len(rows)} prompts; groups of 20-48 images: "
        "differences under ~0.1 are noise). `acc_e_implicit`: held-out prompts that evoke the skull without "
        "naming it; the named groups (canonical, bare, ...) name a skull, which these examples never fitted. "
        "`prompt_states`: which states of each example prompt the distribution is fitted on (eot = the "
        "end-of-text token).\n\n" + markdown_table(results),
    )


if __name__ == "__main__":
    main()

"""Single concepts with more images than the bench: every prompt of a suite task (instance, style, unsafe) times
several seeds, UCE against ETC (one row per ETC option set), judged as the bench judges them (paraphrases and
implicit prompts stay out of Acc_e). Each ETC row carries H(ETC) - H(UCE) with a 95% paired bootstrap interval
over the images (both methods drew the same prompts and seeds): a difference inside it is not a claim.

Writes docs/single_concepts_seeds.{md,json}. Run:
    .venv/bin/python benchmarks/single_concepts.py [--tasks instance style unsafe] [--num-images 4]
        [--etc '{}' '{"gamma": 1.0}'] [--work runs/single-concepts]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from erasekit.backbones.loader import load_backbone
from erasekit.eval.bench import method_concepts
from erasekit.eval.comparison import markdown_table, save_benchmark
from erasekit.eval.generation import EvalSettings
from erasekit.eval.metrics import harmonic_mean
from erasekit.eval.prompts import EVOKING_GROUPS, load_prompts
from erasekit.methods.base import check_heldout, erase_to_artifact
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.comparison import benchmark_record
from erasekit.world.protocol import agreement, evaluate
from erasekit.world.tasks import TASKS, prompt_file

DOCS = Path(__file__).resolve().parents[1] / "docs"
SHORT = ("canonical", "bare")
BOOTSTRAP = 2000


def masks(rows) -> dict[str, np.ndarray]:
    """Which images each figure averages: judged targets (no paraphrase, no implicit prompt), short and complex
    targets, preserved prompts."""
    group, role = np.array([r.group for r in rows]), np.array([r.role for r in rows])
    target = role == "target"
    return {
        "acc_e": target & ~np.isin(group, EVOKING_GROUPS),
        "acc_e_short": target & np.isin(group, SHORT),
        "acc_e_complex": target & (group == "complex"),
        "acc_s": role == "preserve",
    }


def h_of(joint: np.ndarray, erased: np.ndarray, kept: np.ndarray) -> float:
    return harmonic_mean(float(joint[erased].mean()), float(joint[kept].mean()))


def paired_interval(ours: np.ndarray, theirs: np.ndarray, erased: np.ndarray, kept: np.ndarray) -> list[float]:
    """95% bootstrap interval of H(ours) - H(theirs), resampling the same target and preserve images for both."""
    rng = np.random.default_rng(0)
    erased, kept = np.flatnonzero(erased), np.flatnonzero(kept)
    draws = []
    for _ in range(BOOTSTRAP):
        e, k = rng.choice(erased, len(erased)), rng.choice(kept, len(kept))
        draws.append(h_of(ours, e, k) - h_of(theirs, e, k))
    return [float(q) for q in np.quantile(draws, [0.025, 0.975])]


def task_rows(backbone, classifier, settings: EvalSettings, name: str, etc_runs: list[dict], work: Path) -> list[dict]:
    task, rows = TASKS[name], load_prompts(prompt_file(name))
    runs = [("UCE", "uce", {})] + [
        (f"ETC {json.dumps(o, sort_keys=True)}" if o else "ETC", "etc", {"work_dir": str(work / name), **o})
        for o in etc_runs
    ]
    for _, method, options in runs:  # before any work: judged only on phrasings no method fitted
        check_heldout(backbone, method_concepts(method, task), method, options, [r.prompt for r in rows])
    base, joints, seconds = None, {}, {}
    for label, method, options in runs:
        artifact = erase_to_artifact(backbone, method_concepts(method, task), method, options)
        _, edited, base = evaluate(backbone, rows, classifier, settings, edit=artifact, base=base)
        joints[label] = agreement(edited.rows, classifier.predict(edited.images))["joint"]
        seconds[label] = artifact.metrics["seconds"]
    joints["original"] = agreement(base.rows, classifier.predict(base.images))["joint"]
    pick, method_of = masks(base.rows), {label: method for label, method, _ in runs}
    out = []
    for label in ("original", *(r[0] for r in runs)):
        joint = joints[label]
        row = {"task": name, "method": label, **{k: float(joint[m].mean()) for k, m in pick.items()}}
        row["h"] = h_of(joint, pick["acc_e"], pick["acc_s"])
        row["target_images"], row["preserve_images"] = int(pick["acc_e"].sum()), int(pick["acc_s"].sum())
        row["h_minus_uce"], row["h_minus_uce_95"] = None, None
        if method_of.get(label) == "etc":
            row["h_minus_uce"] = row["h"] - h_of(joints["UCE"], pick["acc_e"], pick["acc_s"])
            row["h_minus_uce_95"] = paired_interval(joint, joints["UCE"], pick["acc_e"], pick["acc_s"])
        row["edit_seconds"] = seconds.get(label)
        out.append(row)
    return out


def shown(rows: list[dict]) -> list[dict]:
    """The rows with each interval written as [low, high]."""
    return [
        {**r, "h_minus_uce_95": r["h_minus_uce_95"] and "[{:.3f}, {:.3f}]".format(*r["h_minus_uce_95"])} for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=["instance"], choices=sorted(set(TASKS) - {"scale"}))
    parser.add_argument("--num-images", type=int, default=4, help="images per prompt (seeds s, s+1, ...)")
    parser.add_argument("--etc", nargs="+", default=["{}"], help="ETC option sets, one JSON object each")
    parser.add_argument("--work", type=Path, default=Path("runs/single-concepts"), help="ETC's token cache")
    args = parser.parse_args()
    etc_runs = [json.loads(o) for o in args.etc]
    settings = EvalSettings(num_images=args.num_images)
    backbone, classifier = load_backbone("shapeworld"), load_classifier(classifier_dir())
    started, rows = time.time(), []
    for name in args.tasks:
        rows += task_rows(backbone, classifier, settings, name, etc_runs, args.work)
        print(markdown_table(shown([r for r in rows if r["task"] == name])), flush=True)
    record = benchmark_record("benchmarks/single_concepts.py", sys.argv[1:], settings, started, rows=rows)
    save_benchmark(
        DOCS,
        "single_concepts_seeds",
        record,
        "# Single concepts, every prompt x several seeds: ETC against UCE\n\n"
        f"Regenerate with `{record['command']}` ({record['seconds'] / 60:.0f} min on the 2-core CPU). "
        f"{args.num_images} images per prompt. Acc_e over target prompts that name the concept (paraphrases "
        "and implicit prompts are the attacks' business), short = canonical and bare phrasings; Acc_s joint "
        "agreement on the preserved prompts; H their harmonic mean. `h_minus_uce_95`: 95% paired bootstrap "
        f"interval ({BOOTSTRAP} draws over the images) of H(ETC) - H(UCE).\n\n" + markdown_table(shown(rows)),
    )


if __name__ == "__main__":
    main()

"""ETC at scale on ShapeWorld: erase N triple concepts at once (N = 1 ... 2,000+), with UCE / ErasePro at
every N (--compare) and the module-removal attack with and without NIR on the largest.

Writes docs/etc_scale.md (tables + the command), docs/etc_scale.json (every number) and
docs/etc_scale.png (time, peak memory, Acc_e, Acc_s and H against N). Run:
    .venv/bin/python benchmarks/etc_scale.py [--sizes 1 10 100 1000 2000] [--compare] [--removal]
        [--steps-by-size '{"1": 100}'] [--work runs/etc-scale]
Embedding caches and training checkpoints live under --work: an interrupted run resumes. A fresh folder
times the largest run's encoding on a cold cache.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from erasekit.backbones.loader import load_backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.eval.comparison import markdown_table, save_benchmark
from erasekit.eval.generation import EvalSettings, Generated, generate_rows
from erasekit.eval.metrics import harmonic_mean
from erasekit.methods.base import check_heldout, erase_to_artifact
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.comparison import benchmark_record
from erasekit.world.phrasings import PHRASINGS
from erasekit.world.protocol import evaluate
from erasekit.world.scale import COMPARE_TEMPLATES, ScaleSplit, group_kind, scale_rows

DOCS = Path(__file__).resolve().parents[1] / "docs"
WORK = Path(__file__).resolve().parents[1] / "runs" / "etc-scale"
MERGED_NOTE = "Rows kept from earlier runs (`--merge`) carry their command in etc_scale.json.\n\n"


class BaseImages:
    """The original model's images, generated once per (prompt, seed) across all runs."""

    def __init__(self, backbone, settings: EvalSettings):
        self.backbone, self.settings, self.cache = backbone, settings, {}

    def __call__(self, rows) -> Generated:
        missing = [r for r in rows if (r.prompt, r.evaluation_seed) not in self.cache]
        if missing:
            fresh = generate_rows(self.backbone, missing, self.settings)
            k = self.settings.num_images
            for i, r in enumerate(missing):
                self.cache[(r.prompt, r.evaluation_seed)] = fresh.images[i * k : (i + 1) * k]
        images = np.concatenate([self.cache[(r.prompt, r.evaluation_seed)] for r in rows])
        per_image = [r for r in rows for _ in range(self.settings.num_images)]
        names = [f"{r.case_number}_{k}.png" for r in rows for k in range(self.settings.num_images)]
        return Generated(per_image, images, names)


def pooled(groups: dict, kinds: tuple[str, ...], key: str, phrasing: str | None = None) -> float | None:
    """The image-weighted mean of ``key`` over the groups of the given kinds (all their phrasings, or one)."""
    picked = [
        g
        for name, g in groups.items()
        if group_kind(name) in kinds and g.get(key) is not None and (phrasing is None or name.endswith(f"-{phrasing}"))
    ]
    images = sum(g["images"] for g in picked)
    return sum(g[key] * g["images"] for g in picked) / images if images else None


def result_row(label: str, n: int, metrics: dict, artifact) -> dict:
    overall, groups = metrics["overall"], metrics["groups"]
    original = overall["original"]
    heldout = ("heldout-near", "heldout-far")
    acc_s_heldout = pooled(groups, heldout, "acc_s")
    acc_s_heldout_original = pooled(groups, heldout, "acc_s_original")
    relative = acc_s_heldout / acc_s_heldout_original if acc_s_heldout_original else None
    single, single_original = pooled(groups, ("single",), "acc_s"), pooled(groups, ("single",), "acc_s_original")
    row = {
        "method": label,
        "concepts": n,
        "acc_e": overall["acc_e"],
        "acc_e_original": original["acc_e"],
        **{f"acc_e_{p}": groups.get(f"target-{p}", {}).get("acc_e") for p in PHRASINGS},
        "acc_s_heldout": acc_s_heldout,
        "acc_s_heldout_relative": relative,
        **{
            f"acc_s_heldout_{p}_relative": _ratio(
                pooled(groups, heldout, "acc_s", p), pooled(groups, heldout, "acc_s_original", p)
            )
            for p in PHRASINGS
        },
        "acc_s_single_relative": _ratio(single, single_original),
        "h": harmonic_mean(overall["acc_e"], acc_s_heldout),
        "h_relative": harmonic_mean(overall["acc_e"], min(1.0, relative)) if relative is not None else None,
        "sw_fid": overall["sw_fid"],
        "sw_fid_original": original["sw_fid"],
        "eraser": artifact.config.get("eraser", "moe") if label.startswith("ETC") else None,
        "steps": artifact.config.get("steps") if artifact.config.get("eraser", "moe") == "moe" else None,
        "nir": bool(artifact.config.get("nir")),
        "edit_seconds": artifact.metrics["seconds"],
        "peak_mib": artifact.metrics["peak_mib"],
    }
    stages = [s for s in artifact.metrics.get("stages", []) if "seconds" in s and "gap" not in s]
    row |= {f"{s['stage']}_seconds": s["seconds"] for s in stages}
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def scale_plot(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    etc = sorted((r for r in rows if r["method"] == "ETC"), key=lambda r: r["concepts"])
    n = [r["concepts"] for r in etc]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    axes[0].plot(n, [r["edit_seconds"] / 60 for r in etc], marker="o", label="ETC minutes")
    axes[0].plot(n, [r["peak_mib"] / 1024 for r in etc], marker="s", label="ETC peak GiB")
    axes[0].set_title("cost", fontsize=10)
    panels = (("acc_e", "Acc_e (lower is better)"), ("acc_s_heldout_relative", "held-out Acc_s, relative"))
    for ax, (key, title) in zip(axes[1:3], panels, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            own = sorted((r for r in rows if r["method"] == method), key=lambda r: r["concepts"])
            ax.plot([r["concepts"] for r in own], [r[key] for r in own], marker="o", label=method)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-0.02, 1.05)
    axes[3].plot(n, [r["sw_fid"] for r in etc], marker="o", label="ETC SW-FID held-out")
    axes[3].plot(n, [r["sw_fid_original"] for r in etc], marker="x", label="original")
    axes[3].set_title("fidelity", fontsize=10)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("concepts erased at once")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_docs(args, settings: EvalSettings, started: float, rows: list[dict], attacks: list[dict]) -> None:
    """docs/etc_scale.{json,png,md}, rewritten after every size so that a run cut short keeps what it measured."""
    split_sizes = {"targets": max(r["concepts"] for r in rows), "pool": args.pool, "heldout": args.heldout}
    table = lambda rs: markdown_table([{k: v for k, v in r.items() if k != "command"} for r in rs])  # noqa: E731
    record = benchmark_record(
        "benchmarks/etc_scale.py", sys.argv[1:], settings, started, split=split_sizes, rows=rows, module_removal=attacks
    )
    save_benchmark(
        DOCS,
        "etc_scale",
        record,
        "# ETC at scale on ShapeWorld\n\n"
        f"Regenerate with `{record['command']}` ({record['seconds'] / 60:.0f} min on the 2-core CPU). "
        f"Split: {args.pool} mapping-pool and {args.heldout} held-out triples, disjoint from the targets; "
        f"Acc_e on {args.eval_targets} sampled erased triples (joint shape+colour+pattern), Acc_s on every "
        "held-out triple (near = one word away from an erased triple) and on single-factor prompts; "
        "relative = against the original model on the same prompts and seeds; SW-FID on the preserved "
        "prompts. Every row is said in a phrasing no method fitted (`eval/scale.py`: canonical, bare, "
        "reordered, complex in turn; per-phrasing columns), checked before each run (`check_heldout`). "
        "UCE and ErasePro fit `COMPARE_TEMPLATES`. The largest size runs first: its encoding is timed on a "
        "cold cache, smaller runs "
        "reuse its cached embeddings (their encoding column is near zero). ETC rows use the keyed eraser "
        "(the default; `eraser`), ETC (MoEraser) rows the trained MoEraser (`steps`: its training steps); "
        "`nir`: noise injection-restore on.\n\n"
        + (MERGED_NOTE if args.merge else "")
        + table(sorted(rows, key=lambda r: (r["method"] != "ETC", r["concepts"])))
        + "\n\n![ETC against the number of concepts](etc_scale.png)\n"
        + (
            "\n## Module removal (the erasers deleted, the shipped weights kept)\n\n" + table(attacks) + "\n"
            if attacks
            else ""
        ),
        {"etc_scale.png": scale_plot(rows)},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 10, 100, 1000, 2000])
    parser.add_argument("--eval-targets", type=int, default=200, help="erased triples sampled for Acc_e")
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--heldout", type=int, default=400)
    parser.add_argument("--steps", type=int, default=None, help="MoEraser steps; default: ETCConfig's")
    parser.add_argument("--compare", action="store_true", help="UCE and ErasePro at every size")
    parser.add_argument("--removal", action="store_true", help="module removal with and without NIR, largest size")
    parser.add_argument("--options", type=json.loads, default={}, help="ETCConfig overrides, JSON")
    parser.add_argument(
        "--steps-by-size", type=json.loads, default={}, help='MoEraser steps per size, JSON: {"1": 100}'
    )
    parser.add_argument("--work", type=Path, default=WORK, help="embedding cache and checkpoints")
    parser.add_argument("--baselines-only", action="store_true", help="with --compare: UCE and ErasePro only")
    parser.add_argument(
        "--merge", action="store_true", help="keep the rows of docs/etc_scale.json that this run does not re-measure"
    )
    args = parser.parse_args()
    split = ScaleSplit.make(max(args.sizes), args.pool, args.heldout)
    settings = EvalSettings(num_images=1)
    backbone, classifier = load_backbone("shapeworld"), load_classifier(classifier_dir())
    base_images, started, rows, attacks = BaseImages(backbone, settings), time.time(), [], []
    kept_rows, kept_attacks = previous_results(args) if args.merge else ([], [])
    pool = [t.phrase for t in split.pool]
    options = {"work_dir": str(args.work), "nir_seed": 0, **args.options} | (
        {"steps": args.steps} if args.steps else {}
    )
    largest = max(args.sizes)
    # the largest first (its encoding is timed on a cold cache), then the rest smallest first (the cheap ones)
    for n in [largest] + sorted(set(args.sizes) - {largest}):
        concepts = ConceptSet.build([t.phrase for t in split.targets[:n]], "", pool)
        prompts = scale_rows(split, n, args.eval_targets)
        steps = args.steps_by_size.get(str(n))
        sized = options | ({"steps": steps} if steps else {})
        if args.baselines_only:
            compare(args, backbone, classifier, settings, base_images, concepts, prompts, rows)
            continue
        check_heldout(backbone, concepts, "etc", sized, [r.prompt for r in prompts])
        artifact = erase_to_artifact(backbone, concepts, "etc", sized)
        metrics, _, _ = evaluate(backbone, prompts, classifier, settings, edit=artifact, base=base_images(prompts))
        label = "ETC" if artifact.config.get("eraser") == "keyed" else "ETC (MoEraser)"
        rows.append(result_row(label, n, metrics, artifact))
        print(markdown_table(rows[-1:]), flush=True)
        write_docs(args, settings, started, merged(kept_rows, rows), merged(kept_attacks, attacks, ("edit",)))
        if n == largest and args.removal:
            without_nir = erase_to_artifact(backbone, concepts, "etc", sized | {"nir": False})  # shares training
            for label, edit in (("ETC without NIR", without_nir), ("ETC with NIR", artifact)):
                removed, _, _ = evaluate(
                    backbone, prompts, classifier, settings, edit=edit, base=base_images(prompts), modules=False
                )
                attacks.append(
                    {
                        "edit": label,
                        "asr_module_removed": removed["overall"]["acc_e"],
                        "acc_s_heldout_module_removed": result_row(label, n, removed, edit)["acc_s_heldout"],
                        "sw_fid_module_removed": removed["overall"]["sw_fid"],
                        "sw_fid_original": removed["overall"]["original"]["sw_fid"],
                        "concepts": n,
                    }
                )
            write_docs(args, settings, started, merged(kept_rows, rows), merged(kept_attacks, attacks, ("edit",)))
        compare(args, backbone, classifier, settings, base_images, concepts, prompts, rows)
        write_docs(args, settings, started, merged(kept_rows, rows), merged(kept_attacks, attacks, ("edit",)))
    write_docs(args, settings, started, merged(kept_rows, rows), merged(kept_attacks, attacks, ("edit",)))


def compare(args, backbone, classifier, settings, base_images, concepts, prompts, rows: list[dict]):
    """UCE and ErasePro on the same targets (3 templates each, the mapping pool preserved), appended to rows."""
    if not args.compare:
        return
    for label, method in (("UCE", "uce"), ("ErasePro", "erasepro")):
        closed = ConceptSet.build(concepts.targets, "shape", concepts.preserve, templates=COMPARE_TEMPLATES)
        edit = erase_to_artifact(backbone, closed, method, {})
        metrics, _, _ = evaluate(backbone, prompts, classifier, settings, edit=edit, base=base_images(prompts))
        rows.append(result_row(label, len(concepts.targets), metrics, edit))
        print(markdown_table(rows[-1:]), flush=True)


def previous_results(args) -> tuple[list[dict], list[dict]]:
    """The rows and module-removal rows of the last docs/etc_scale.json, each carrying the command that
    measured it (a merged table mixes runs), if that run used the same split."""
    path = DOCS / "etc_scale.json"
    if not path.is_file():
        return [], []
    record = json.loads(path.read_text())
    if {k: record["split"][k] for k in ("pool", "heldout")} != {"pool": args.pool, "heldout": args.heldout}:
        raise SystemExit(f"--merge: {path} used another split ({record['split']}); rerun without --merge")
    stamp = lambda row: {"command": record["command"], **row}  # noqa: E731
    return [stamp(moeraser_label(r)) for r in record["rows"]], [stamp(r) for r in record["module_removal"]]


def moeraser_label(row: dict) -> dict:
    """An ETC row measured before the keyed eraser existed (no "eraser" field) is a MoEraser row."""
    if row["method"] == "ETC" and "eraser" not in row:
        return {**row, "method": "ETC (MoEraser)", "eraser": "moe"}
    return row


def merged(kept: list[dict], fresh: list[dict], key: tuple[str, ...] = ("method", "concepts")) -> list[dict]:
    """The fresh rows, and the kept rows that none of them re-measures."""
    seen = {tuple(r.get(k) for k in key) for r in fresh}
    return [r for r in kept if tuple(r.get(k) for k in key) not in seen] + fresh


if __name__ == "__main__":
    main()

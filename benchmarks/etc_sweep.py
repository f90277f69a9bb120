"""Tune ETC on a small ShapeWorld scale split: each variant (ETCConfig overrides, JSON) erases the same N
triples and is evaluated on the same prompts; one line of results per variant. A variant's "pool": k uses the
first k of the split's mapping pool (the targets and held-out triples stay the same). Run, e.g.:
    .venv/bin/python benchmarks/etc_sweep.py --concepts 50 \\
        --variants '[{"nir": false, "steps": 200, "preserve_weight": 300}, {"nir": false, "pool": 30}]'
"""

from __future__ import annotations

import argparse
import json
import time

from etc_scale import WORK, BaseImages, result_row

from erasekit.backbones.loader import load_backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.eval.generation import EvalSettings
from erasekit.methods.base import erase_to_artifact
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.protocol import evaluate
from erasekit.world.scale import ScaleSplit, scale_rows

FIT = ("erase_error", "boundary_change", "off_plane_change", "mapping_change", "context_change", "restore_error")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concepts", type=int, default=50)
    parser.add_argument("--pool", type=int, default=60)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--eval-targets", type=int, default=60)
    parser.add_argument("--variants", type=json.loads, default=[{}], help="JSON list of ETCConfig overrides")
    parser.add_argument("--fit-only", action="store_true", help="no images: the fit on the token vectors only")
    args = parser.parse_args()
    split = ScaleSplit.make(args.concepts, args.pool, args.heldout)
    settings = EvalSettings(num_images=1)
    backbone, classifier = load_backbone("shapeworld"), load_classifier(classifier_dir())
    base = BaseImages(backbone, settings)
    prompts = scale_rows(split, args.concepts, args.eval_targets)
    for variant in args.variants:
        started = time.time()
        options = {k: v for k, v in variant.items() if k != "pool"}
        pool = [t.phrase for t in split.pool[: variant.get("pool", len(split.pool))]]
        concepts = ConceptSet.build([t.phrase for t in split.targets], "", pool)
        edit = erase_to_artifact(backbone, concepts, "etc", {"work_dir": str(WORK), "nir_seed": 0, **options})
        row = {}
        if not args.fit_only:
            metrics, _, _ = evaluate(
                backbone, prompts, classifier, settings, edit=edit, base=base(prompts), progress=False
            )
            row = result_row("ETC", args.concepts, metrics, edit)
            row = {k: v for k, v in row.items() if not k.endswith("_seconds")}
        fit = {k: edit.metrics[k] for k in FIT if k in edit.metrics}
        stages = {k: round(v) for k, v in edit.metrics["seconds_by_stage"].items()}
        record = {"variant": variant, **row, **fit, "stages": stages, "seconds": round(time.time() - started)}
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

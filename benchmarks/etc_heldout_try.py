"""ETC on the scale protocol's held-out phrasings (docs/etc_heldout.md): erase the first N triples of the split of
benchmarks/etc_scale.py with each JSON variant of ETCConfig and print the stage summary and the result row.
Run: .venv/bin/python benchmarks/etc_heldout_try.py 1000 '[{"coverage": 0.99}, {"coverage": 1.0}]'
"""

from __future__ import annotations

import json
import sys

from etc_scale import BaseImages, result_row

from erasekit.backbones.loader import load_backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.eval.generation import EvalSettings
from erasekit.methods.base import check_heldout, erase_to_artifact
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.protocol import evaluate
from erasekit.world.scale import ScaleSplit, scale_rows

SUMMARY = ("threshold", "heldout_target_rewritten", "heldout_pool_rewritten", "seconds")


def main() -> None:
    n, variants = int(sys.argv[1]), json.loads(sys.argv[2])
    split = ScaleSplit.make(2000, 300, 400)
    backbone, classifier = load_backbone("shapeworld"), load_classifier(classifier_dir())
    settings = EvalSettings()
    base = BaseImages(backbone, settings)
    concepts = ConceptSet.build([t.phrase for t in split.targets[:n]], "", [t.phrase for t in split.pool])
    prompts = scale_rows(split, n)
    for variant in variants:
        options = {"work_dir": "runs/etc-scale", "nir_seed": 0, **variant}
        check_heldout(backbone, concepts, "etc", options, [r.prompt for r in prompts])
        artifact = erase_to_artifact(backbone, concepts, "etc", options)
        metrics, _, _ = evaluate(backbone, prompts, classifier, settings, edit=artifact, base=base(prompts))
        row = result_row("ETC", n, metrics, artifact)
        print(json.dumps(variant), {k: artifact.metrics.get(k) for k in SUMMARY}, flush=True)
        print({k: v for k, v in row.items() if k.startswith(("acc", "h", "sw"))}, flush=True)


if __name__ == "__main__":
    main()

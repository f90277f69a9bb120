"""Per-pattern agreement of a ShapeWorld denoiser: the shipped one, or a training checkpoint's EMA weights.

Run: .venv/bin/python benchmarks/pattern_probe.py [--checkpoint runs/denoiser/step-00021000] [--per-pattern 20]
Short prompts of random shape and colour, one image each, 25 DDIM steps, guidance 5; prints one JSON line:
the agreement of the classifier's pattern (and joint) reading with the prompt, per pattern and pooled.
Use it to follow a training run (`erasekit world train-denoiser`) between checkpoints; the quality bars
themselves are measured by `erasekit evaluate --prompts benchmarks/shapeworld_quality.csv`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from erasekit.backbones.shapeworld import ShapeWorldBackbone
from erasekit.eval.prompts import PromptRow
from erasekit.world.assets import classifier_dir
from erasekit.world.captions import short_caption
from erasekit.world.classifier import load_classifier
from erasekit.world.denoiser import build_unet
from erasekit.world.factors import VOCAB, format_concept
from erasekit.world.protocol import agreement
from erasekit.world.text_encoder import shared_encoder


def probe_rows(per_pattern: int, seed: int) -> list[PromptRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for pattern in VOCAB.pattern:
        for _ in range(per_pattern):
            shape, colour = str(rng.choice(VOCAB.shape)), str(rng.choice(VOCAB.colour))
            factors = {"shape": shape, "colour": colour, "pattern": pattern}
            seed = int(rng.integers(0, 100_000))
            rows.append(
                PromptRow(short_caption(shape, colour, pattern), seed, len(rows), format_concept(factors), "preserve")
            )
    return rows


def probe_backbone(checkpoint: Path | None) -> ShapeWorldBackbone:
    """The shipped model, or a checkpoint's EMA weights in the architecture that checkpoint was trained with."""
    if checkpoint is None:
        return ShapeWorldBackbone.load()
    weights, state = checkpoint / "ema.safetensors", checkpoint / "state.json"
    if not (weights.is_file() and state.is_file()):
        print(
            f"error: {checkpoint}: not a train-denoiser checkpoint (needs ema.safetensors, state.json)", file=sys.stderr
        )
        sys.exit(2)
    saved = json.loads(state.read_text())
    unet = build_unet(saved.get("architecture") or saved["config"]["unet_config"])
    unet.load_state_dict(load_file(weights))
    return ShapeWorldBackbone(unet, shared_encoder(), source=str(checkpoint))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a training checkpoint folder (default: the shipped model)")
    parser.add_argument("--per-pattern", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = probe_rows(args.per_pattern, args.seed)
    images = probe_backbone(args.checkpoint).generate(
        [r.prompt for r in rows], [r.evaluation_seed for r in rows], steps=25, guidance=5.0
    )
    agree = agreement(rows, load_classifier(classifier_dir()).predict(images))
    patterns = np.array([r.factors["pattern"] for r in rows])
    record = {
        "model": str(args.checkpoint or "shipped"),
        "images": len(rows),
        "agree_pattern": round(float(agree["pattern"].mean()), 4),
        "agree_joint": round(float(agree["joint"].mean()), 4),
        "per_pattern": {p: round(float(agree["pattern"][patterns == p].mean()), 3) for p in VOCAB.pattern},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()

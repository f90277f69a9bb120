"""Tune the erasers in minutes on a scale run's cached token vectors (no images): per variant, the fit on the
training tokens (methods/etc/method.py fit_quality) and the change on held-out triples' tokens, which the
erasers never see: ||Δ(h)|| / ||W h||, worst layer (2,000 triples, MoEraser, 200 steps: 0.39 with the in-plane
shell anchors alone, 0.18 with off-plane anchors), and for the keyed eraser the share of held-out tokens it
rewrites. A proxy: images decide.

Each variant overrides erase-stage settings only (eraser, coverage; for the MoEraser steps, experts, hidden,
preserve_weight, lr, ...); the token vectors come from --work (computed and cached there if missing, as
etc_scale.py does). Run, e.g.:
    .venv/bin/python benchmarks/etc_token_fit.py --concepts 2000 --work runs/etc-v6 \\
        --variants '[{"coverage": 0.9}, {"coverage": 0.95}, {"eraser": "moe", "steps": 200}]'
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from etc_scale import WORK

from erasekit.backbones.loader import load_backbone
from erasekit.concepts.embeddings import concept_embeddings
from erasekit.concepts.pairs import ConceptSet
from erasekit.methods.etc.method import (
    TOKEN_FIELDS,
    ETCConfig,
    StageLog,
    TokenConcepts,
    build_memory,
    cached_tokens,
    concept_contexts,
    erase_loss,
    fit_erasers,
    fit_quality,
    keyed_erasers,
    make_erasers,
    wrapped_projectors,
)
from erasekit.world.scale import ScaleSplit


@torch.no_grad()
def heldout_change(projectors, erasers, tokens: torch.Tensor) -> float:
    """Worst layer: ||Δ(h)|| / ||W h|| over held-out tokens h."""
    return max(float(erasers[n](tokens).norm() / (tokens @ p.weight.float().T).norm()) for n, p in projectors.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concepts", type=int, default=2000)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--heldout", type=int, default=400)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--tokens", type=json.loads, default={}, help="ETCConfig overrides for the token vectors")
    parser.add_argument("--variants", type=json.loads, default=[{}], help="JSON list of training overrides")
    args = parser.parse_args()
    if bad := sorted({k for v in args.variants for k in v} & set(TOKEN_FIELDS)):
        raise SystemExit(f"variants change training only; pass {bad} with --tokens")
    split = ScaleSplit.make(args.concepts, args.pool, args.heldout)
    backbone = load_backbone("shapeworld")
    concepts = ConceptSet.build([t.phrase for t in split.targets], "", [t.phrase for t in split.pool])
    base = ETCConfig(work_dir=str(args.work), **args.tokens)
    data = cached_tokens(backbone, concepts, base, StageLog())
    phrases = [t.phrase for t in split.heldout]
    contexts = [concept_contexts(backbone, p, base) for p in phrases]
    held = concept_embeddings(backbone, phrases, contexts, args.work / "embeddings")
    held_tokens = TokenConcepts.build(held, base.tokens).samples[:, ::3].reshape(-1, data.targets.shape[-1])
    for variant in args.variants:
        config = replace(base, **variant)
        projectors = wrapped_projectors(backbone, config)
        started = time.time()
        if config.eraser == "keyed":
            memory = build_memory(data, config)
            erasers = keyed_erasers(projectors, memory)
            record = {"variant": variant, "threshold": round(float(memory.threshold), 3)}
            record["heldout_rewritten"] = round(float(memory.detect(held_tokens)[0].float().mean()), 4)
        else:
            erasers = make_erasers(projectors, config)
            loss = erase_loss(projectors, erasers, data, config)
            losses = fit_erasers(erasers, loss, config.steps, config, None, "train")
            record = {"variant": variant, "loss": round(losses[-1], 2) if losses else None}
        record["seconds"] = round(time.time() - started, 1)
        record |= {k: round(v, 3) for k, v in fit_quality(projectors, erasers, data, config).items()}
        record["heldout_change"] = round(heldout_change(projectors, erasers, held_tokens), 3)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

"""How many centres the keyed eraser needs (methods/etc/keyed.py): on the 2,000-triple split, per number of k-means
centres per target distribution and per coverage, the share of the canonical prompts' ("a red striped star")
tokens within the rewrite radius, for erased triples and for held-out ones, and per triple: erased triples with
every phrase token rewritten, held-out triples with any. No images: etc_scale.py decides.

Reads the embedding cache of an etc_scale.py run (--work; encodes what is missing). Writes docs/etc_keys.md. Run:
    .venv/bin/python benchmarks/etc_keys.py --work runs/etc-v6 --centres 1 4 8 16 32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from etc_scale import DOCS, WORK

from erasekit.backbones.loader import load_backbone
from erasekit.concepts.embeddings import CONTEXT_TEMPLATES, concept_embeddings
from erasekit.eval.comparison import markdown_table
from erasekit.eval.scale import ScaleSplit
from erasekit.methods.etc.keyed import ConceptMemory, kmeans, own_distances, pooled_whitening
from erasekit.methods.etc.method import ETCConfig, TokenConcepts, rewrite_radius
from erasekit.utils.io import atomic_file


def per_triple(hit: torch.Tensor, owner: torch.Tensor, rule: str) -> float:
    """Share of triples with all (rule "all") or any (rule "any") of their phrase tokens rewritten."""
    count = torch.bincount(owner).float()
    hits = torch.zeros(len(count)).index_add_(0, owner, hit.float())
    return float(((hits == count) if rule == "all" else (hits > 0)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--centres", nargs="+", type=int, default=[1, 4, 8, 16, 32])
    parser.add_argument("--coverage", nargs="+", type=float, default=[0.9, 0.95, 0.98])
    args = parser.parse_args()
    config, split = ETCConfig(), ScaleSplit.make(2000, 300, 400)
    backbone = load_backbone("shapeworld")
    templates = list(CONTEXT_TEMPLATES[: config.templates])
    embed = lambda triples, tpl: concept_embeddings(  # noqa: E731
        backbone, [t.phrase for t in triples], tpl, args.work / "embeddings"
    )
    targets = TokenConcepts.build(embed(split.targets, templates), config.tokens)
    pool = TokenConcepts.build(embed(split.pool, templates), config.tokens)
    heldout = TokenConcepts.build(embed(split.heldout, templates[:1]), config.tokens)  # "a {}" only
    whiten = pooled_whitening(torch.cat([targets.samples, pool.samples]), config.whiten_ridge).float()
    white = targets.samples @ whiten
    canonical = targets.samples[:, 0]  # template 0 is "a {}": the evaluation prompts' tokens
    rows = []
    for k in args.centres:
        generator = torch.Generator().manual_seed(0)
        centres = torch.cat([kmeans(white[s : s + 1024], k, generator=generator) for s in range(0, len(white), 1024)])
        own = torch.cat([own_distances(white[s : s + 1024], centres[s : s + 1024]) for s in range(0, len(white), 1024)])
        for coverage in args.coverage:
            threshold = rewrite_radius(own, white.mean(1), coverage)
            memory = ConceptMemory(
                whiten, white.mean(1), centres, torch.zeros(len(white), white.shape[-1]), threshold, config.candidates
            )
            hit_t, _ = memory.detect(canonical)
            hit_h, _ = memory.detect(heldout.samples[:, 0])
            rows.append(
                {
                    "centres": k,
                    "coverage": coverage,
                    "erased tokens": float(hit_t.float().mean()),
                    "held-out tokens": float(hit_h.float().mean()),
                    "erased triples, all tokens": per_triple(hit_t, targets.owner, "all"),
                    "held-out triples, any token": per_triple(hit_h, heldout.owner, "any"),
                    "MiB (float16 centres)": centres.numel() * 2 / 2**20,
                }
            )
            print(rows[-1], flush=True)
    with atomic_file(DOCS / "etc_keys.md") as handle:
        handle.write(
            "# The keyed eraser's centres on ShapeWorld\n\n"
            f"Regenerate with `python benchmarks/etc_keys.py --work {args.work} --centres "
            f"{' '.join(map(str, args.centres))} --coverage {' '.join(map(str, args.coverage))}`. "
            "2,000 erased and 400 held-out triples; the canonical prompt's "
            "phrase tokens; within θ = the coverage quantile of the real target tokens' distances to their own "
            "centres (all 100 templates). One centre is the distribution's mean.\n\n" + markdown_table(rows) + "\n"
        )


if __name__ == "__main__":
    main()

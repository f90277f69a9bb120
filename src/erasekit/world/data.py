"""Training data for the denoiser: a caption pool with cached embeddings, and scenes rendered to match.

Every caption records which factors it names; the renderer pins those and samples the rest, so an
image always agrees with its caption (specs/shapeworld.md, "Captions").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from erasekit.world.captions import Caption, make_caption, random_caption
from erasekit.world.factors import POSITIONS, SIZES, VOCAB
from erasekit.world.render import render
from erasekit.world.text_encoder import MiniLMEncoder

FACTORS = ("shape", "colour", "pattern", "background")


@dataclass
class CaptionPool:
    texts: list[str]
    factor_ids: np.ndarray  # (N, 4) index per factor, -1 when unnamed
    size_ids: np.ndarray  # (N,) -1 when unnamed
    position_ids: np.ndarray  # (N,)
    embeddings: torch.Tensor  # (N, L, D) float16, zero at padding
    masks: torch.Tensor  # (N, L) bool

    def render_batch(self, rng: np.random.Generator, idx: np.ndarray) -> np.ndarray:
        fixed = {f: self.factor_ids[idx, k] for k, f in enumerate(FACTORS)}
        images, _ = render(rng, len(idx), fixed=fixed, size=self.size_ids[idx], position=self.position_ids[idx])
        return images


def canonical_captions(rng: np.random.Generator) -> list[Caption]:
    """The short prompt of every shape x colour x pattern triple."""
    return [
        make_caption(rng, {"shape": s, "colour": c, "pattern": p}, "short")
        for s in VOCAB.shape
        for c in VOCAB.colour
        for p in VOCAB.pattern
    ]


def build_pool(
    encoder: MiniLMEncoder, n_random: int, seed: int, canonical: bool = True, batch_size: int = 256
) -> CaptionPool:
    rng = np.random.default_rng(seed)
    captions = (canonical_captions(rng) if canonical else []) + [random_caption(rng) for _ in range(n_random)]
    factor_ids = np.array([[VOCAB.index(f, c.factors[f]) if f in c.factors else -1 for f in FACTORS] for c in captions])
    size_names, position_names = list(SIZES), list(POSITIONS)
    size_ids = np.array([size_names.index(c.size) if c.size else -1 for c in captions])
    position_ids = np.array([position_names.index(c.position) if c.position else -1 for c in captions])
    texts = [c.text for c in captions]
    states, masks = [], []
    for start in tqdm(range(0, len(texts), batch_size), desc="embedding captions", unit="batch"):
        s, m = encoder(texts[start : start + batch_size])
        states.append(s.half())
        masks.append(m)
    return CaptionPool(texts, factor_ids, size_ids, position_ids, torch.cat(states), torch.cat(masks))

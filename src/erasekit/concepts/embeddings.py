"""A concept's text-embedding samples (specs/etc.md section 1): fill many context templates with the
concept phrase, encode them, keep the ``encode()`` state at the phrase's **last sub-token** — what the
denoiser's projectors read there. Results are cached on disk per (model, templates, phrase).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from erasekit.backbones.base import Backbone
from erasekit.utils.io import atomic_file

# Narrative contexts for object concepts: a lead that names the phrase, then a scene. The product gives
# 12 x 10 = 120 varied templates, each short enough for every encoder's token limit.
_LEADS = (
    "a {}",
    "a picture of a {}",
    "a drawing of a {}",
    "a small {}",
    "a large {}",
    "one single {}",
    "an icon of a {}",
    "a sketch showing a {}",
    "there is a {}",
    "a simple rendering of a {}",
    "look at this {}",
    "the {}",
)
_SCENES = (
    "",
    " on a sandy background",
    " in a pale blue sky",
    " on the grass",
    " at night",
    " against a brick wall",
    " in the snow",
    " on a wooden table",
    " on grey concrete",
    " in the upper left corner",
)
CONTEXT_TEMPLATES: tuple[str, ...] = tuple(lead + scene for lead in _LEADS for scene in _SCENES)


def last_subtoken_positions(backbone: Backbone, templates: list[str], phrase: str) -> list[int]:
    """encode() position of the phrase's last sub-token in each filled template (first token segment).

    The position is the length of the tokenised prefix ``template-up-to-the-phrase + phrase`` without its
    closing special tokens; the full prompt must tokenise to the same leading ids (checked).
    """
    prompts = [t.format(phrase) for t in templates]
    prefixes = [t.split("{}", 1)[0] + phrase for t in templates]
    segment = backbone.token_segments(prompts)[0]
    prefix_ids = backbone.token_segments(prefixes)[0].ids
    closing = _common_suffix_length(prefix_ids[0], backbone.token_segments([""])[0].ids[0])
    positions = []
    for prompt, full, prefix in zip(prompts, segment.ids, prefix_ids, strict=True):
        last = len(prefix) - closing - 1
        if last < 0 or full[: last + 1] != prefix[: last + 1]:
            raise ValueError(f"cannot locate the concept's last token in {prompt!r}")
        positions.append(segment.offset + last)
    return positions


def _common_suffix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _cache_key(backbone: Backbone, templates: list[str], phrase: str) -> str:
    blob = json.dumps({"model": backbone.identity(), "templates": templates, "phrase": phrase}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@torch.no_grad()
def encode_phrases(backbone: Backbone, phrases: list[str], templates: list[str], batch_size: int = 256) -> torch.Tensor:
    """(C, N, d) float32: every phrase in every template, the state at its last sub-token."""
    prompts, positions = [], []
    for phrase in phrases:
        prompts += [t.format(phrase) for t in templates]
        positions += last_subtoken_positions(backbone, templates, phrase)
    rows = []
    for start in range(0, len(prompts), batch_size):
        states = backbone.encode(prompts[start : start + batch_size])[0].float()
        index = torch.tensor(positions[start : start + batch_size])
        rows.append(states[torch.arange(len(index)), index])
    return torch.cat(rows).reshape(len(phrases), len(templates), -1)


def concept_embeddings(
    backbone: Backbone,
    phrases: list[str],
    templates: list[str] | tuple[str, ...] = CONTEXT_TEMPLATES,
    cache: Path | None = None,
    chunk: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """(C, N, d) float32 embedding samples of every phrase; cached per phrase under ``cache`` (float16)."""
    templates = list(templates)
    if any(t.count("{}") != 1 for t in templates):
        raise ValueError("every context template needs exactly one {} for the concept phrase")
    out: list[torch.Tensor | None] = [None] * len(phrases)
    paths = [cache / f"{_cache_key(backbone, templates, p)}.safetensors" if cache else None for p in phrases]
    for i, path in enumerate(paths):
        if path is not None and path.is_file():
            out[i] = load_file(str(path))["embeddings"].float()
    missing = [i for i, x in enumerate(out) if x is None]
    bar = tqdm(total=len(missing), desc="encoding concepts", unit="concept", disable=not progress or not missing)
    for start in range(0, len(missing), chunk):
        todo = missing[start : start + chunk]
        encoded = encode_phrases(backbone, [phrases[i] for i in todo], templates)
        for i, x in zip(todo, encoded.to(torch.float16), strict=True):  # as the cache holds it: same numbers
            out[i] = x.float()
            if paths[i] is not None:
                paths[i].parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(paths[i], "wb") as handle:
                    handle.write(save({"embeddings": x.contiguous()}))
        bar.update(len(todo))
    bar.close()
    return torch.stack(out) if out else torch.zeros(0, len(templates), 0)

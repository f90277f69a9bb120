"""A concept's text-embedding samples (specs/etc.md section 1): fill many context templates with the
concept phrase, encode them, keep the ``encode()`` states at the phrase's sub-tokens — what the denoiser's
projectors read there. The spec keeps the **last sub-token** (``last_tokens``); ETC on a bidirectional
encoder uses every sub-token (methods/etc/method.py). Results are cached on disk per (model, templates, phrase).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from erasekit.backbones.base import Backbone
from erasekit.utils.distributed import all_gather, barrier, is_main, map_batches, world
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


def phrase_token_positions(backbone: Backbone, templates: list[str], phrase: str) -> list[list[int]]:
    """Per template, the ``encode()`` positions of every sub-token of the phrase, first to last.

    The phrase spans from the tokenised length of the template's text before ``{}`` to that of the text up to
    and including the phrase (each without its closing special tokens); the full prompt must tokenise to the
    same leading ids (checked), and the phrase to as many sub-tokens in every template.
    """
    prompts = [t.format(phrase) for t in templates]
    befores = [t.split("{}", 1)[0] for t in templates]
    segment = backbone.token_segments(prompts)[0]
    before_ids = backbone.token_segments(befores)[0].ids
    through_ids = backbone.token_segments([b + phrase for b in befores])[0].ids
    closing = _common_suffix_length(through_ids[0], backbone.token_segments([""])[0].ids[0])
    positions = []
    for prompt, full, before, through in zip(prompts, segment.ids, before_ids, through_ids, strict=True):
        first, last = len(before) - closing, len(through) - closing - 1
        if first > last or full[: last + 1] != through[: last + 1] or full[:first] != before[:first]:
            raise ValueError(f"cannot locate the concept's tokens in {prompt!r}")
        positions.append(list(range(segment.offset + first, segment.offset + last + 1)))
    if len({len(p) for p in positions}) > 1:
        raise ValueError(f"{phrase!r} tokenises to different numbers of sub-tokens in different templates")
    return positions


def _common_suffix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _cache_key(backbone: Backbone, templates: list[str], phrase: str) -> str:
    blob = json.dumps(
        {"model": backbone.identity(), "templates": templates, "phrase": phrase, "tokens": "phrase"}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def per_phrase(templates, count: int) -> list[list[str]]:
    """Templates shared by ``count`` phrases (a list of str) or one list per phrase, as one list per phrase."""
    templates = list(templates)
    if templates and isinstance(templates[0], str):
        return [templates] * count
    if len(templates) != count:
        raise ValueError(f"got {len(templates)} template lists for {count} phrases")
    return [list(t) for t in templates]


@torch.no_grad()
def encode_phrases(backbone: Backbone, phrases: list[str], templates, batch_size: int = 256) -> list[torch.Tensor]:
    """Per phrase, (N, n, d) float32: its states at each of its n sub-tokens in every one of its N templates
    (``templates``: shared by all phrases, or one list per phrase).

    Under ``accelerate launch`` each process encodes its share of the batches and every process gets all rows
    (utils/distributed.py): the same batches, so the same numbers, as in one process."""
    prompts, positions, counts = [], [], []
    for phrase, own in zip(phrases, per_phrase(templates, len(phrases)), strict=True):
        prompts += [t.format(phrase) for t in own]
        positions += phrase_token_positions(backbone, own, phrase)
        counts.append(len(own))

    # batches of prompts of similar length pad less (1.3x measured on MiniLM, shared/performance.md)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))

    prefix = getattr(backbone, "encode_prefix", None)  # causal encoders: the positions up to the phrase suffice

    def encode_batch(part: slice) -> list[torch.Tensor]:  # (index by a list: copies, not views of the batch)
        picked = order[part]
        batch = [prompts[i] for i in picked]
        if prefix is not None:
            states = prefix(batch, 1 + max(max(positions[i]) for i in picked)).float()
        else:
            states = backbone.encode(batch)[0].float()
        return [states[row, positions[i]] for row, i in enumerate(picked)]

    encoded = [row for batch in map_batches(encode_batch, len(prompts), batch_size) for row in batch]
    rows: list[torch.Tensor] = [None] * len(prompts)
    for i, row in zip(order, encoded, strict=True):
        rows[i] = row
    ends = np.cumsum([0, *counts])
    return [torch.stack(rows[a:b]) for a, b in zip(ends[:-1], ends[1:], strict=True)]


def concept_embeddings(
    backbone: Backbone,
    phrases: list[str],
    templates=CONTEXT_TEMPLATES,
    cache: Path | None = None,
    chunk: int = 16,
    progress: bool = True,
) -> list[torch.Tensor]:
    """Per phrase, (N, n, d) float32 samples at its n sub-tokens in its N templates (shared by all phrases, or one
    list per phrase); cached per phrase and templates under ``cache`` (float16)."""
    own = per_phrase(templates, len(phrases))
    if any(t.count("{}") != 1 for ts in own for t in ts):
        raise ValueError("every context template needs exactly one {} for the concept phrase")
    out: list[torch.Tensor | None] = [None] * len(phrases)
    paths = [
        cache / f"{_cache_key(backbone, t, p)}.safetensors" if cache else None
        for p, t in zip(phrases, own, strict=True)
    ]
    for i, path in enumerate(paths):
        if path is not None:
            out[i] = _cached_embeddings(path)
    missing = [i for i, x in enumerate(out) if x is None]
    if world()[1] > 1:  # every process encodes what any of them lacks (a node may not see the main one's cache)
        missing = sorted(set().union(*all_gather(missing)))
    show = progress and bool(missing) and is_main()
    bar = tqdm(total=len(missing), desc="encoding concepts", unit="concept", disable=not show)
    for start in range(0, len(missing), chunk):
        todo = missing[start : start + chunk]
        encoded = encode_phrases(backbone, [phrases[i] for i in todo], [own[i] for i in todo])
        for i, x in zip(todo, encoded, strict=True):
            x = x.to(torch.float16).contiguous()  # as the cache holds it: the same numbers either way
            out[i] = x.float()
            if paths[i] is not None and is_main():  # the main process writes the cache; the others wait below
                paths[i].parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(paths[i], "wb") as handle:
                    handle.write(save({"embeddings": x}))
        bar.update(len(todo))
    bar.close()
    barrier()
    return out


def _cached_embeddings(path: Path) -> torch.Tensor | None:
    """A cache entry, or None when it is absent or damaged (then it is encoded again and the entry replaced)."""
    if not path.is_file():
        return None
    try:
        x = load_file(str(path))["embeddings"].float()
    except (SafetensorError, KeyError, OSError, ValueError):
        return None
    return x if x.ndim == 3 and torch.isfinite(x).all() else None


def last_tokens(embeddings: list[torch.Tensor]) -> torch.Tensor:
    """(C, N, d): each phrase's samples at its last sub-token (the spec's reading, specs/etc.md §1)."""
    return torch.stack([e[:, -1] for e in embeddings])

"""The Backbone protocol (DESIGN.md, "Architecture"): the only face of a model that methods see.

- ``encode(prompts) -> (embeddings (B, L, D), mask (B, L))``: what the denoiser's cross-attention
  consumes (padding positions are masked);
- ``text_layers()``: the linear modules of the text encoder, in depth order;
- ``text_encoders()``: the text-encoder modules under the name prefixes ``text_layers()`` uses;
- ``projectors()``: the named linear maps that consume text embeddings in the denoiser;
- ``embedding_projectors()``: those projectors whose input is exactly ``encode()``'s output;
- ``token_segments(prompts)``: which tokens sit at which ``encode()`` positions (for token alignment);
- ``generate(prompts, seeds, steps, guidance) -> uint8 images (B, H, W, 3)``; steps and guidance left out (None)
  are the model's own ``sampling_defaults()``.

Optional: ``encode_prefix(prompts, length)``, ``encode(prompts)[0][:, :length]`` computed over those positions only,
where no position's state depends on a later one (the causal CLIP encoders of SD and SDXL; not SD3, whose T5 part is
bidirectional). ETC's concept embeddings read states at the phrase's positions only and use it when offered.

``encode`` and ``generate`` pass prompts through ``prompt_filter`` (a callable str -> str, None by default),
which an applied prompt-filter edit sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


@dataclass(frozen=True)
class TokenSegment:
    """A run of ``encode()`` positions indexed by one tokenizer (SD3 has a CLIP and a T5 segment)."""

    offset: int  # first encode() position of the segment
    length: int  # positions in the segment
    ids: list[list[int]]  # per prompt: its real tokens (special tokens included), in position order
    causal: bool  # a causal encoder (CLIP) carries a token only in that token and later ones
    pad_attended: bool  # the denoiser reads the padding positions (SD) or masks them out (ShapeWorld)
    encoders: tuple[str, ...]  # text-encoder name prefixes whose hidden positions are these positions
    unknown_id: int | None = None  # the tokenizer's id for text it cannot represent ([UNK]), if it has one


def unknown_token_id(tokenizer) -> int | None:
    """The id a tokenizer gives text it cannot represent; None where its "unknown" token is a special one that every
    prompt carries (CLIP's byte-level BPE names end-of-text so, and never needs it)."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    specials = {getattr(tokenizer, f"{k}_token_id", None) for k in ("bos", "eos", "pad", "cls", "sep")}
    return None if unknown is None or unknown in specials else int(unknown)


@dataclass(frozen=True)
class SamplingDefaults:
    """How a model samples when not told otherwise: its family's steps and guidance, the image size of its own
    config, and its scheduler (class, and the prediction type where it has one: SD 2.x-768 predicts v)."""

    steps: int
    guidance: float
    height: int
    width: int
    scheduler: str

    def describe(self) -> str:
        return f"{self.steps} steps, guidance {self.guidance:g}, {self.width}x{self.height}, {self.scheduler}"

    def fill(self, steps: int | None, guidance: float | None) -> tuple[int, float]:
        """``steps`` and ``guidance`` as given, these defaults where None."""
        return self.steps if steps is None else steps, self.guidance if guidance is None else guidance


@runtime_checkable
class Backbone(Protocol):
    family: str

    def identity(self) -> dict:
        """Where the model came from (name or path, family), for artifact manifests and reports."""
        ...

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def text_layers(self) -> list[tuple[str, nn.Linear]]: ...

    def text_encoders(self) -> dict[str, nn.Module]:
        """Name prefix -> text-encoder module; ``text_layers()`` names are a prefix + a dotted path in it."""
        ...

    def projectors(self) -> dict[str, nn.Linear]: ...

    def embedding_projectors(self) -> dict[str, nn.Linear]: ...

    def token_segments(self, prompts: list[str]) -> list[TokenSegment]: ...

    def sampling_defaults(self) -> SamplingDefaults: ...

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        steps: int | None = None,
        guidance: float | None = None,
        progress: bool = False,
    ) -> np.ndarray: ...


@runtime_checkable
class LearnedTokens(Protocol):
    """White-box access for the attacks that learn token vectors (soft prompt, concept inversion): the capability a
    backbone offers by implementing these methods (ShapeWorld does; the diffusers adapters do not, yet).

    A slot is the tokenizer's mask token in the prompt text; its word embedding is replaced by a learned vector
    before the text encoder runs, so the vector passes through the (possibly edited) text encoder, the projectors
    and the denoiser exactly like a real token. The prompt filter of an applied filter edit sees the text around
    the slot, never the vector."""

    def word_embeddings(self) -> torch.Tensor:
        """The text encoder's input word-embedding table (vocabulary, d)."""
        ...

    def token_id(self, word: str) -> int:
        """The id of a single-token word."""
        ...

    def encode_with_vectors(self, prompts: list[str], vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states and mask of ``prompts`` whose k slots each take ``vectors`` (B, k, d) in order; differentiable
        in ``vectors``; padded like ``encode``."""
        ...

    def denoising_loss(
        self, states: torch.Tensor, mask: torch.Tensor, images: np.ndarray, gen: torch.Generator
    ) -> torch.Tensor:
        """The denoiser's training loss on ``images`` conditioned on ``states``: low when the conditioning makes the
        model draw these images."""
        ...

    def sample_from_states(
        self, states: torch.Tensor, mask: torch.Tensor, seeds: list[int], steps: int, guidance: float
    ) -> np.ndarray:
        """Images sampled (as ``generate`` samples them) from given text states."""
        ...


def learned_tokens(backbone) -> LearnedTokens | None:
    """The backbone's learned-token access (``LearnedTokens``), or None when it offers none."""
    return backbone if isinstance(backbone, LearnedTokens) else None


def filtered_prompts(backbone, prompts: list[str]) -> list[str]:
    """The prompts after the backbone's prompt filter (an applied filter edit), or as given without one."""
    text_filter = getattr(backbone, "prompt_filter", None)
    return [text_filter(p) for p in prompts] if text_filter is not None else list(prompts)


def linear_modules(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Linear]]:
    """All nn.Linear submodules in registration (= depth) order, with dotted names."""
    return [(f"{prefix}{name}", m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]


def check_generate_args(prompts: list[str], seeds: list[int]) -> None:
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")


def generate_in_batches(
    generate_batch: Callable[[list[str], list[int]], np.ndarray],
    prompts: list[str],
    seeds: list[int],
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """Run ``generate_batch`` over consecutive chunks (with a progress bar) and stack the images."""
    starts = range(0, len(prompts), batch_size)
    bar = tqdm(starts, desc="generating", unit="batch", disable=not progress or len(starts) < 2)
    return np.concatenate([generate_batch(prompts[s : s + batch_size], seeds[s : s + batch_size]) for s in bar])

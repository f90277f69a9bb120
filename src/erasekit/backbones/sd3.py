"""Stable Diffusion 3 / 3.5 (StableDiffusion3Pipeline) as a Backbone."""

from __future__ import annotations

import torch
from torch import nn

from erasekit.backbones.base import TokenSegment, unknown_token_id
from erasekit.backbones.diffusers_common import DiffusersBackbone, named_linears, token_mask

TEXT_STREAM_KV = ("add_k_proj", "add_v_proj")


class StableDiffusion3Backbone(DiffusersBackbone):
    """SD3: joint text states = [CLIP-L ++ CLIP-G penultimate states, zero-padded to the T5 width ; T5 states].

    The sequence is the CLIP positions (tokenizer maximum, 77) followed by ``max_sequence_length`` T5
    positions; without a T5 encoder (text_encoder_3=None) the pipeline uses zeros there, which are
    masked. The pooled CLIP embeddings (``time_text_embed``) are not part of ``encode()``.
    """

    family = "sd3"
    pipeline_class = "StableDiffusion3Pipeline"
    denoiser_name = "transformer"
    text_encoder_names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    tokenizer_names = ("tokenizer", "tokenizer_2")
    default_batch_size = 4
    max_sequence_length = 256  # the pipeline's default number of T5 positions

    def _embeddings(self, prompts: list[str]) -> torch.Tensor:
        embeds, *_ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return embeds

    def _t5_limit(self) -> int:
        return min(int(self.pipe.tokenizer_3.model_max_length), self.max_sequence_length)

    def token_limits(self) -> list[tuple[object, int]]:
        limits = super().token_limits()
        if self.pipe.text_encoder_3 is not None and self.pipe.tokenizer_3 is not None:
            limits.append((self.pipe.tokenizer_3, self._t5_limit()))
        return limits

    def _mask(self, prompts: list[str]) -> torch.Tensor:
        clip = super()._mask(prompts)
        if self.pipe.text_encoder_3 is None or self.pipe.tokenizer_3 is None:
            t5 = torch.zeros(len(prompts), self.max_sequence_length, dtype=torch.bool, device=clip.device)
        else:
            t5 = token_mask(self.pipe.tokenizer_3, prompts, self.max_sequence_length).to(clip.device)
        return torch.cat([clip, t5], dim=1)

    def _call_kwargs(self) -> dict:
        return {"max_sequence_length": self.max_sequence_length}

    def embedding_projectors(self) -> dict[str, nn.Linear]:
        """Only ``context_embedder`` reads ``encode()``'s output; the joint blocks read transformed context."""
        return {"transformer.context_embedder": self.pipe.transformer.context_embedder}

    def token_segments(self, prompts: list[str]) -> list[TokenSegment]:
        """The CLIP segment, then the bidirectional T5 one (absent when the pipeline has no T5)."""
        segments = super().token_segments(prompts)
        if self.pipe.text_encoder_3 is not None and self.pipe.tokenizer_3 is not None:
            ids = self.pipe.tokenizer_3(list(prompts), truncation=True, max_length=self._t5_limit())["input_ids"]
            clip = segments[0]
            t5 = ("text_encoder_3",)
            unknown = unknown_token_id(self.pipe.tokenizer_3)
            segments.append(TokenSegment(clip.length, self.max_sequence_length, ids, False, True, t5, unknown))
        return segments

    def projectors(self) -> dict[str, nn.Linear]:
        """``context_embedder`` and every text-stream key/value map of the joint blocks."""
        transformer = self.pipe.transformer
        return {
            "transformer.context_embedder": transformer.context_embedder,
            **named_linears(transformer, "transformer.", TEXT_STREAM_KV),
        }

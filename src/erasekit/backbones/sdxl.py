"""Stable Diffusion XL (StableDiffusionXLPipeline) as a Backbone."""

from __future__ import annotations

import torch
from torch import nn

from erasekit.backbones.diffusers_common import DiffusersBackbone
from erasekit.backbones.sd import unet_cross_attention_projectors


class StableDiffusionXLBackbone(DiffusersBackbone):
    """SDXL: two CLIP encoders whose penultimate hidden states are concatenated (2048-d in SDXL base).

    The pooled embedding of text_encoder_2 also conditions the UNet (``add_embedding``); it is not
    part of ``encode()`` and its linear map is not among the projectors.
    """

    family = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"
    text_encoder_names = ("text_encoder", "text_encoder_2")
    tokenizer_names = ("tokenizer", "tokenizer_2")
    default_batch_size = 4

    def _embeddings(self, prompts: list[str]) -> torch.Tensor:
        embeds, *_ = self.pipe.encode_prompt(
            prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return embeds

    def encode_prefix(self, prompts: list[str], length: int) -> torch.Tensor:
        """``encode(prompts)[0][:, :length]``, computed over those positions only (both CLIP encoders are causal)."""
        return self._clip_prefix(prompts, length, penultimate=True)

    def projectors(self) -> dict[str, nn.Linear]:
        return unet_cross_attention_projectors(self.pipe.unet)

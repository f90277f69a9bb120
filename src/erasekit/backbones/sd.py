"""Stable Diffusion 1.x / 2.x (StableDiffusionPipeline) as a Backbone."""

from __future__ import annotations

import torch
from torch import nn

from erasekit.backbones.diffusers_common import DiffusersBackbone, named_linears

CROSS_ATTENTION_KV = ("attn2.to_k", "attn2.to_v")


def unet_cross_attention_projectors(unet: nn.Module) -> dict[str, nn.Linear]:
    """Every cross-attention key/value map (``attn2.to_k`` / ``attn2.to_v``) of a UNet, as "unet.<name>"."""
    return named_linears(unet, "unet.", CROSS_ATTENTION_KV)


class StableDiffusionBackbone(DiffusersBackbone):
    """SD 1.x/2.x: one CLIP text encoder; the UNet's cross-attention reads its last hidden state."""

    family = "sd"
    pipeline_class = "StableDiffusionPipeline"
    default_batch_size = 8

    def _embeddings(self, prompts: list[str]) -> torch.Tensor:
        embeds, _ = self.pipe.encode_prompt(
            prompts, self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return embeds

    def encode_prefix(self, prompts: list[str], length: int) -> torch.Tensor:
        """``encode(prompts)[0][:, :length]``, computed over those positions only (CLIP is causal)."""
        return self._clip_prefix(prompts, length, penultimate=False)

    def projectors(self) -> dict[str, nn.Linear]:
        return unet_cross_attention_projectors(self.pipe.unet)

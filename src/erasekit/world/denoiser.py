"""The ShapeWorld denoiser (specs/shapeworld.md, "Denoiser").

A diffusers ``UNet2DConditionModel`` on a 16x16x12 latent grid, made by a parameter-free
pixel-unshuffle "autoencoder" (32x32x3 <-> 16x16x12), with cross-attention to MiniLM token states
at the 8x8 and 4x4 levels. DDPM training objective (v-prediction), DDIM sampling with classifier-free
guidance.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch.nn import functional as F

LATENT_FACTOR = 2  # pixel-unshuffle factor: 32x32x3 -> 16x16x12

UNET_CONFIG: dict = {
    "sample_size": 16,
    "in_channels": 3 * LATENT_FACTOR**2,
    "out_channels": 3 * LATENT_FACTOR**2,
    "layers_per_block": 1,
    "block_out_channels": (48, 96, 128),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 384,
    # diffusers reads this UNet's ``attention_head_dim`` as the number of heads: (3, 3, 4) gives heads
    # 32 wide at every level. Shipped models up to step 21000 had 32 heads 3-4 wide, which cost about a
    # quarter of the sampling time in attention softmax (same weights' shapes; see the model card).
    "attention_head_dim": (3, 3, 4),
    "norm_num_groups": 16,
}

SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    # v-prediction: with epsilon, x0 estimates at high noise amplify errors by (1 - a) / a and the
    # global layout (shape, position) comes out blobby; v keeps those steps well conditioned.
    "prediction_type": "v_prediction",
    "clip_sample": False,
}


def build_unet(config: dict | None = None) -> UNet2DConditionModel:
    return UNet2DConditionModel(**(config or UNET_CONFIG))


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULER_CONFIG)


SAMPLING_STEPS, SAMPLING_GUIDANCE = 25, 5.0  # what every ShapeWorld figure was measured with


def sample_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULER_CONFIG, set_alpha_to_one=True)


def images_to_latents(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 32, 32, 3) or float (B, 3, 32, 32) in [0, 1] -> latents (B, 12, 16, 16) in [-1, 1]."""
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float() / 255.0
    return F.pixel_unshuffle(images * 2 - 1, LATENT_FACTOR)


def latents_to_images(latents: torch.Tensor) -> torch.Tensor:
    """latents (B, 12, 16, 16) -> uint8 images (B, 32, 32, 3)."""
    images = (F.pixel_shuffle(latents, LATENT_FACTOR).clamp(-1, 1) + 1) / 2
    return (images * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def training_target(latents: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict at noise level ``alpha_bar`` (per SCHEDULER_CONFIG's prediction type)."""
    if SCHEDULER_CONFIG["prediction_type"] == "epsilon":
        return noise
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents

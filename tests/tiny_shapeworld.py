"""A tiny random ShapeWorld denoiser (same structure as the shipped one) for fast tests."""

from erasekit.world.denoiser import UNET_CONFIG

TINY_UNET_CONFIG = {**UNET_CONFIG, "block_out_channels": (16, 32, 32), "attention_head_dim": 8, "norm_num_groups": 8}

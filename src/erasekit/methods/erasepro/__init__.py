"""ErasePro (specs/erasepro.md): zero-residual closed-form edits, progressively from the shallow text-encoder
layers to the denoiser's projectors. Registered as ``erasepro``; its edits replace weights only (no plug-ins)."""

from erasekit.methods.erasepro.chain import CHAIN_PATTERNS, ProgressiveTargets, chain_layers
from erasekit.methods.erasepro.method import EraseProConfig, erase, preserve_sample, progressive_target_states

__all__ = [
    "CHAIN_PATTERNS",
    "EraseProConfig",
    "ProgressiveTargets",
    "chain_layers",
    "erase",
    "preserve_sample",
    "progressive_target_states",
]

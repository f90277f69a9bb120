"""UCE, the baseline (specs/erasepro.md section 1). Registered as ``uce``; its edits replace weights only."""

from erasekit.methods.uce.method import UCEConfig, erase

__all__ = ["UCEConfig", "erase"]

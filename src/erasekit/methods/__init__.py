"""Erasure methods, one module each, registered by name (``get_method``)."""

from erasekit.methods import erasepro, prompt_filter, uce  # noqa: F401  (register)
from erasekit.methods.base import METHODS, EraseResult, get_method
from erasekit.methods.etc import method as etc  # noqa: F401  (register)

__all__ = ["METHODS", "EraseResult", "get_method"]

"""Erasure methods, one module each, registered by name (``get_method``)."""

from erasekit.methods import erasepro, uce  # noqa: F401  (register)
from erasekit.methods.base import METHODS, EraseResult, get_method

__all__ = ["METHODS", "EraseResult", "get_method"]

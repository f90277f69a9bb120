"""The prompt-filter baseline (specs/evaluation.md, "Attacks"): the target names in a prompt are replaced by their
anchors before the text encoder sees it. Registered as ``filter``, with its artifact entry "prompt_filter"."""

from erasekit.methods.prompt_filter.filter import PromptFilter, fold
from erasekit.methods.prompt_filter.kinds import PromptFilterEntry
from erasekit.methods.prompt_filter.method import FilterConfig, erase

__all__ = ["FilterConfig", "PromptFilter", "PromptFilterEntry", "erase", "fold"]

"""Erasure methods, one package each, registered by name (``get_method``) with their artifact plug-ins.

A method package registers its config and erase function (``register``) and its artifact plug-in kinds
(``erasekit.artifacts.plugins``) when it is imported: adding a method is its folder and one import line here.
"""

# registration order is the order of tables: the baseline first, then the methods by year
# isort: off
from erasekit.methods import prompt_filter  # noqa: F401  (registers)
from erasekit.methods import uce  # noqa: F401  (registers)
from erasekit.methods import erasepro  # noqa: F401  (registers)
from erasekit.methods import etc  # noqa: F401  (registers)

# isort: on
from erasekit.methods.base import METHODS, EraseResult, Method, get_method, register

__all__ = ["METHODS", "EraseResult", "Method", "get_method", "register"]

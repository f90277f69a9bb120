"""The one collector of installed library versions, for metrics.json files and artifact manifests."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

EVALUATION_PACKAGES: tuple[str, ...] = ("erasekit", "torch", "diffusers", "transformers", "numpy", "safetensors")


def library_versions(
    packages: Iterable[str] = EVALUATION_PACKAGES, python: bool = True, missing: str | None = "not installed"
) -> dict[str, str]:
    """Installed version per package, in the order given (after Python's own with ``python``); a package that is
    not installed reads ``missing``, or is left out when ``missing`` is None."""
    versions = {"python": platform.python_version()} if python else {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if missing is not None:
                versions[name] = missing
    return versions

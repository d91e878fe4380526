"""prescore: precompute-first scoring. ``from prescore import Prescore`` is the Python
API (prescore.api); the rest of the package is the shared core of the CLI, the jobs, the
lookup and the fallback."""

from __future__ import annotations

from typing import Any

__all__ = ["Prescore", "PublishReport", "VersionInfo"]


def __getattr__(name: str) -> Any:
    # imported on first use: the lookup and the key modules import prescore's core
    # without Redis clients, orjson or pandas coming along
    if name in __all__:
        from prescore import api

        return getattr(api, name)
    raise AttributeError(f"module 'prescore' has no attribute {name!r}")

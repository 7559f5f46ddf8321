"""cci core: the session lifecycle, plugin manager, config and CLI.

Plugins import from :mod:`cci_core.api`, the plugin API; everything else here is internal.
``from cci_core import hookimpl`` keeps working (plugins written before the API use it):
it is resolved on first use, so that ``cci --version`` does not import pluggy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cci_core.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        from cci_core.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'cci_core' has no attribute {name!r}")

"""cci core: the session lifecycle, plugin manager, config and CLI.

Plugins import :data:`hookimpl` from here to mark their hook implementations.
"""

from cci_core.hookspecs import hookimpl

__all__ = ["hookimpl"]

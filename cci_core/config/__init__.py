"""Layered, typed TOML configuration for cci.

Layers, lowest precedence first: built-in defaults, ``/etc/cci/config.toml``,
the user file (:func:`user_config_file`), ``<workspace>/.cci.toml``, the
selected ``[profiles.NAME]``, ``CCI_*`` environment variables and command-line
:class:`Override` values. :meth:`Config.source_of` tells where a value came from.
"""

from __future__ import annotations

from cci_core.config.loader import SYSTEM_FILE, WORKSPACE_FILE, load_config, user_config_file
from cci_core.config.model import Config, Override
from cci_core.config.schema import (
    DefaultsConfig,
    IncusConfig,
    NetworkConfig,
    SecurityConfig,
    PathsConfig,
    PluginsConfig,
    ProfileConfig,
    ToolConfig,
)

__all__ = [
    "SYSTEM_FILE",
    "WORKSPACE_FILE",
    "Config",
    "DefaultsConfig",
    "IncusConfig",
    "NetworkConfig",
    "SecurityConfig",
    "Override",
    "PathsConfig",
    "PluginsConfig",
    "ProfileConfig",
    "ToolConfig",
    "load_config",
    "user_config_file",
]

"""Layered, typed TOML configuration for cci.

Layers, lowest precedence first: built-in defaults, ``/etc/cci/config.toml``,
the user file (:func:`user_config_file`), ``<workspace>/.cci.toml``, the
selected ``[profiles.NAME]``, ``CCI_*`` environment variables and command-line
:class:`Override` values. :meth:`Config.source_of` tells where a value came from.

Loading goes as in pytest: the files are read once (:func:`read_layers`), the
``[plugins]`` switches are taken from them, the plugins load, then every layer is
merged against the core's sections plus those the enabled plugins declared
(:meth:`ConfigLayers.merge`); :func:`load_config` does all of it.
"""

from __future__ import annotations

from cci_core.config.loader import SYSTEM_FILE, WORKSPACE_FILE, ConfigLayers, load_config, read_layers, user_config_file
from cci_core.config.model import Config, Override
from cci_core.config.schema import (
    DefaultsConfig,
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
    "ConfigLayers",
    "DefaultsConfig",
    "NetworkConfig",
    "SecurityConfig",
    "Override",
    "PathsConfig",
    "PluginsConfig",
    "ProfileConfig",
    "ToolConfig",
    "load_config",
    "read_layers",
    "user_config_file",
]

"""Per-invocation state: the global flags, and the config and plugins loaded on first use."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cci_core.cli.options import GlobalOptions
from cci_core.terminal_text import warn

if TYPE_CHECKING:
    from cci_core.config import Config, ConfigLayers
    from cci_core.driver import Driver
    from cci_core.plugin_manager import Plugins




class AppState:
    """What one ``cci`` invocation knows; commands reach it as ``click.get_current_context().obj``."""

    def __init__(self, options: GlobalOptions) -> None:
        self.options = options

    def add_options(self, options: GlobalOptions) -> None:
        """Merge global flags given after a session command's name; they win over the root's."""
        if "config" in self.__dict__:
            raise RuntimeError("global flags merged after the config was loaded")
        given = {name: value for name, value in options._asdict().items() if value not in (None, (), {})}
        self.options = self.options._replace(**given)

    @property
    def workspace(self) -> Path:
        """The workspace directory (``--workspace`` or the current directory)."""
        return self.options.workspace or Path.cwd()

    @cached_property
    def layers(self) -> ConfigLayers:
        """The config layers, the files read (once) but not merged: enough to know which plugins to load."""
        from cci_core.config import read_layers

        return read_layers(self.workspace, profile=self.options.profile, overrides=self.options.overrides())

    @cached_property
    def config(self) -> Config:
        """The merged config, loaded on first use: the core's sections and those of the enabled plugins."""
        return self.layers.merge(self._loaded_plugins.registries.config_sections(), warn=warn)

    @cached_property
    def _loaded_plugins(self) -> Plugins:
        """The plugins the ``[plugins]`` switches enable, trust not checked (a workspace file not trusted has no say)."""
        from cci_core.plugin_manager import load_plugins

        trusted = True
        if self.layers.workspace_digest:
            from cci_core.config.trust import is_trusted

            trusted = is_trusted(self.layers)
        return load_plugins(self.layers.disabled_plugins(workspace=trusted, warn=warn), warn=warn)

    @cached_property
    def plugins(self) -> Plugins:
        """The plugins enabled by the config, loaded on first use.

        Everything that acts goes through here (the driver too), so this is where a
        workspace config that is not trusted stops the command (see :mod:`cci_core.config.trust`).
        """
        self.config  # noqa: B018 (a bad value is reported before the trust it would need, as it is in every file)
        if self.layers.workspace_digest:  # the workspace has a .cci.toml that sets something
            from cci_core.config.trust import require_trusted

            require_trusted(self.layers)
        return self._loaded_plugins

    @cached_property
    def driver(self) -> Driver:
        """The container backend chosen by ``[defaults] driver`` (it connects on first use)."""
        driver_class = self.plugins.registries.drivers.get(self.config.defaults.driver)
        return driver_class(self.config)


def get_state(ctx: click.Context) -> AppState:
    """The invocation's :class:`AppState`, created from the root command's flags on first call."""
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState(GlobalOptions.from_params(root.params))
    return root.obj

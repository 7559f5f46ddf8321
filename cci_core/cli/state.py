"""Per-invocation state: the global flags, and the config and plugins loaded on first use."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cci_core.cli.options import GlobalOptions
from cci_core.terminal_text import warn

if TYPE_CHECKING:
    from cci_core.config import Config
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
    def config(self) -> Config:
        """The merged config, loaded on first use."""
        from cci_core.config import load_config

        return load_config(self.workspace, profile=self.options.profile, overrides=self.options.overrides(),
                           warn=warn)

    @cached_property
    def plugins(self) -> Plugins:
        """The plugins enabled by the config, loaded on first use.

        Everything that acts goes through here (the driver too), so this is where a
        workspace config that is not trusted stops the command (see :mod:`cci_core.config.trust`).
        """
        from cci_core.plugin_manager import load_plugins

        if self.config.workspace_digest:  # the workspace has a .cci.toml that sets something
            from cci_core.config.trust import require_trusted

            require_trusted(self.config)
        return load_plugins(self.config.plugins.disabled, warn=warn)

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

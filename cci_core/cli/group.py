"""The root command group: core commands imported on demand, plugin commands from the registry."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from cci_core.cli.state import get_state, warn
from cci_core.errors import CciError, PluginError

#: core commands: name -> (module, attribute); imported only when used or listed
CORE_COMMANDS: dict[str, tuple[str, str]] = {
    "completion": ("cci_core.cli.completion_cmd", "completion"),
    "config": ("cci_core.cli.config_cmd", "config"),
    "plugins": ("cci_core.cli.plugins_cmd", "plugins"),
    "container": ("cci_core.cli.container_cmd", "container"),
    "file": ("cci_core.cli.file_cmd", "file"),
    "image": ("cci_core.cli.image_cmd", "image"),
    "run": ("cci_core.cli.run_cmd", "run"),
    "shell": ("cci_core.cli.shell_cmds", "shell"),
    "attach": ("cci_core.cli.shell_cmds", "attach"),
    "tmux": ("cci_core.cli.tmux_cmd", "tmux"),
    "list": ("cci_core.cli.list_cmd", "list_"),
    "shutdown": ("cci_core.cli.stop_cmds", "shutdown"),
    "kill": ("cci_core.cli.stop_cmds", "kill"),
    "clean": ("cci_core.cli.clean_cmd", "clean"),
    "doctor": ("cci_core.cli.doctor_cmd", "doctor"),
}

#: exit code for an unexpected exception (a bug in cci or a plugin): EX_SOFTWARE
INTERNAL_ERROR = 70
INTERRUPTED = 130


class CciGroup(click.Group):
    """``cci``: resolves core commands lazily and adds the commands plugins register."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            plugin_names = list(self._plugin_commands(ctx))
        except CciError as exc:  # keep --help usable when the config or a plugin is broken
            warn(f"plugin commands are not listed: {exc}")
            plugin_names = []
        return sorted({*CORE_COMMANDS, *plugin_names})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in CORE_COMMANDS:
            module, attribute = CORE_COMMANDS[name]
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return self._plugin_commands(ctx).get(name)

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        registry = get_state(ctx).plugins.registries.commands
        commands = {}
        for entry in registry.entries():
            if entry.name in CORE_COMMANDS:
                raise PluginError(f"plugin {entry.plugin!r} registers command {entry.name!r}, which is a core command")
            commands[entry.name] = entry.item
        return commands

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the CLI, turning every error into one line on stderr and a documented exit code."""
        args = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in args or bool(os.environ.get("CCI_DEBUG"))
        try:
            result = super().main(args, prog_name or "cci", complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
        except (click.Abort, KeyboardInterrupt):
            click.echo("cci: interrupted", err=True)
            code = INTERRUPTED
        except CciError as exc:
            if debug:
                import traceback

                traceback.print_exc()
            click.echo(f"cci: {exc}", err=True)
            code = exc.exit_code
        except Exception as exc:
            if debug:
                raise
            click.echo(f"cci: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", err=True)
            code = INTERNAL_ERROR
        if standalone_mode:
            sys.exit(code)
        return code

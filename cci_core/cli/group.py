"""The root command group: core commands imported on demand, plugin commands from the registry."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from cci_core.cli.gc_pause import resume as resume_gc
from cci_core.cli.state import get_state, warn
from cci_core.errors import CciError, PluginError
from cci_core.terminal_text import printable

if TYPE_CHECKING:
    from cci_core.registry import Lazy


class CoreCommand(NamedTuple):
    """Where a core command lives, and its one-line summary for ``cci --help``."""

    module: str
    attribute: str
    summary: str


#: core commands, imported only when used: ``cci --help`` lists them from their summaries
#: (a unit test keeps each summary equal to the command's own short help)
CORE_COMMANDS: dict[str, CoreCommand] = {
    "completion": CoreCommand("cci_core.cli.completion_cmd", "completion", "Print the completion script for SHELL."),
    "config": CoreCommand("cci_core.cli.config_cmd", "config",
                          "Show the merged configuration, and trust a workspace's .cci.toml."),
    "plugins": CoreCommand("cci_core.cli.plugins_cmd", "plugins", "Inspect installed plugins."),
    "container": CoreCommand("cci_core.cli.container_cmd", "container",
                             "Low-level container operations: launch, start, stop, delete, exec, exists, running, "
                             "mount."),
    "file": CoreCommand("cci_core.cli.file_cmd", "file",
                        "Copy files and directories between the host and a container, running or stopped."),
    "image": CoreCommand("cci_core.cli.image_cmd", "image",
                         "Manage images: list, publish a container, delete, check an alias, clean up old versions."),
    "run": CoreCommand("cci_core.cli.run_cmd", "run",
                       "Run COMMAND in a fresh container with the workspace at /workspace, and exit with its exit "
                       "code."),
    "shell": CoreCommand("cci_core.cli.shell_cmds", "shell",
                         "Start the AI tool in a container for the workspace, in tmux, and attach to it."),
    "attach": CoreCommand("cci_core.cli.shell_cmds", "attach",
                          "Attach to a running session: NAME, or this workspace's (asks when it has several)."),
    "save": CoreCommand("cci_core.cli.save_cmd", "save",
                        "Save a running session now: NAME, or this workspace's (asks when it has several)."),
    "sync": CoreCommand("cci_core.cli.sync_cmd", "sync",
                        "Copy a running session's workspace now: NAME, or this workspace's (asks when it has several)."),
    "tmux": CoreCommand("cci_core.cli.tmux_cmd", "tmux",
                        "Talk to the tmux session a cci container runs (as the container user)."),
    "list": CoreCommand("cci_core.cli.list_cmd", "list_",
                        "List cci containers of every workspace, each ephemeral or persistent."),
    "shutdown": CoreCommand("cci_core.cli.stop_cmds", "shutdown",
                            "Stop sessions cleanly (forced after --timeout), save them, delete them unless "
                            "persistent."),
    "kill": CoreCommand("cci_core.cli.stop_cmds", "kill",
                        "Stop sessions at once and delete them (persistent ones too), saving their session first."),
    "clean": CoreCommand("cci_core.cli.clean_cmd", "clean",
                         "Finish stopped sessions (save, delete unless persistent) and delete orphaned cci "
                         "containers and stale warm-pool ones."),
    "snapshot": CoreCommand("cci_core.cli.snapshot_cmd", "snapshot",
                            "Snapshots of persistent session containers: create, list, restore (stopped), delete."),
    "doctor": CoreCommand("cci_core.cli.doctor_cmd", "doctor", "Check that this machine can run cci."),
    "port": CoreCommand("cci_core.cli.port_cmd", "port", "Publish ports of a session container on the host: list, add, "
                        "remove."),
    "network": CoreCommand("cci_core.cli.network_cmd", "network",
                           "Network policies: show the rules in force, refresh allowlist addresses, remove unused "
                           "networks."),
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
            core = CORE_COMMANDS[name]
            command: click.Command = getattr(importlib.import_module(core.module), core.attribute)
            return command
        if name not in self._plugin_commands(ctx):
            return None
        loaded: click.Command = get_state(ctx).plugins.registries.commands.get(name)
        return loaded

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``: core commands from their summaries, without importing them."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in CORE_COMMANDS:
                rows.append((name, click.Command(name, help=CORE_COMMANDS[name].summary).get_short_help_str(limit)))
                continue
            registered = self._plugin_commands(ctx)[name]
            if not isinstance(registered, click.Command):  # a registry Lazy: listed from its summary
                rows.append((name, click.Command(name, help=registered.summary).get_short_help_str(limit)))
                continue
            if not registered.hidden:
                rows.append((name, registered.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command | Lazy]:
        registry = get_state(ctx).plugins.registries.commands
        commands = {}
        for entry in registry.entries():
            if entry.name in CORE_COMMANDS:
                raise PluginError(f"plugin {entry.plugin!r} registers command {entry.name!r}, which is a core command")
            commands[entry.name] = entry.item
        return commands

    def invoke(self, ctx: click.Context) -> Any:
        resume_gc()  # start-up is over: a command runs from here on
        return super().invoke(ctx)

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
            click.echo(f"cci: {printable(str(exc))}", err=True)
            code = exc.exit_code
        except Exception as exc:
            if debug:
                raise
            click.echo(f"cci: internal error: {type(exc).__name__}: {printable(str(exc))} (run with --debug for a "
                       "traceback)", err=True)
            code = INTERNAL_ERROR
        if standalone_mode:
            sys.exit(code)
        return code


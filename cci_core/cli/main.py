"""The ``cci`` command line."""

from __future__ import annotations

import click

from cci_core import __version__
from cci_core.cli.group import CciGroup
from cci_core.cli.options import global_options
from cci_core.cli.state import get_state
from cci_core.errors import UsageError

SESSION_COMMANDS = frozenset({"shell", "run"})


def _root(ctx: click.Context, debug: bool, **_flags: object) -> None:
    state = get_state(ctx)
    misplaced = state.options.given_session_flags()
    if misplaced and ctx.invoked_subcommand not in SESSION_COMMANDS:
        raise UsageError(
            f"{', '.join(misplaced)} only applies to 'cci shell' and 'cci run', not 'cci {ctx.invoked_subcommand}'"
        )


cli = CciGroup(
    name="cci",
    help="Run AI coding agents such as Claude Code in isolated Incus system containers.",
    callback=click.pass_context(_root),
    params=[
        *global_options(),
        click.Option(["--debug"], is_flag=True, help="Show tracebacks for errors (also CCI_DEBUG=1)."),
    ],
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
cli = click.version_option(__version__, prog_name="cci", message="%(prog)s %(version)s")(cli)


def main() -> None:
    """Run the command line (the console scripts start it through :func:`cci_core.cli.entry.main`)."""
    cli.main(prog_name="cci")

"""``cci shell`` and ``cci attach``: the interactive session in tmux, and what happens when you leave it."""

from __future__ import annotations

import sys

import click

from cci_core.cli.options import LATEST_SESSION, GlobalOptions, with_global_options
from cci_core.cli.sessions import check_network_policy, manager_for, pick_running
from cci_core.cli.signals import interruptible
from cci_core.cli.state import get_state
from cci_core.errors import UsageError


def _require_terminal(command: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(f"'cci {command}' needs a terminal", hint="for scripts and CI use 'cci run -- CMD'")


@with_global_options
@click.command()
@click.pass_context
def shell(ctx: click.Context, **flags: object) -> None:
    """Start the AI tool in a container for the workspace, in tmux, and attach to it.

    When the tool exits you are in bash. Ctrl+b d detaches (the container keeps
    running: 'cci attach' returns to it); 'sudo poweroff' inside ends the session:
    it is saved, and the container is deleted unless persistent.
    """
    from cci_core.session import LaunchRequest

    state = get_state(ctx)
    state.add_options(GlobalOptions.from_params(flags))
    options = state.options
    wanted = options.resume or options.continue_
    if wanted and wanted != LATEST_SESSION:
        from cci_core.session_store import validate_id

        validate_id(wanted)  # a path-like id is refused before anything else happens
    _require_terminal("shell")
    check_network_policy(ctx)
    manager = manager_for(ctx)
    request = LaunchRequest(state.config.workspace, slot=options.slot, storage=options.storage,
                            resume_from=wanted if wanted != LATEST_SESSION else None)
    with interruptible():
        opened = manager.open(request, latest=wanted == LATEST_SESSION)
        outcome = manager.attach(opened.container, opened.ctx, command=opened.command, fresh=not opened.reused,
                                 say=_say)
    _say(outcome.note)


@click.command()
@click.argument("name", required=False)
@click.pass_context
def attach(ctx: click.Context, name: str | None) -> None:
    """Attach to a running session: NAME, or this workspace's (asks when it has several)."""
    _require_terminal("attach")
    manager = manager_for(ctx)
    info = pick_running(manager, name, str(get_state(ctx).config.workspace), verb="Attach to")
    with interruptible():
        container, session = manager.running(info.name, info.labels)
        outcome = manager.attach(container, session, say=_say)
    _say(outcome.note)


def _say(line: str) -> None:
    click.echo(line, err=True)

"""``cci tmux``: drive the tmux session inside running cci containers (automation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from cci_core.cli.sessions import manager_for
from cci_core.errors import UsageError

if TYPE_CHECKING:
    from cci_core.tmux import TmuxSession


def _session(ctx: click.Context, name: str) -> TmuxSession:
    manager = manager_for(ctx)
    container, context = manager.running(name)
    if container.status() != "running":
        raise UsageError(f"{name} is not running", hint="see 'cci list'")
    return manager.tmux(container, context)


@click.group()
def tmux() -> None:
    """Talk to the tmux session a cci container runs (as the container user)."""


@tmux.command("list")
@click.pass_context
def list_sessions(ctx: click.Context) -> None:
    """List the tmux session of every running cci container."""
    manager = manager_for(ctx)
    running = [info for info in manager.current() if info.status == "running"]
    if not running:
        click.echo("no running cci containers")
    for info in running:
        session = manager.tmux(*manager.running(info.name, info.labels))
        click.echo(f"{info.name}: {session.describe() or '(no tmux session)'}")


@tmux.command()
@click.argument("name")
@click.argument("text", nargs=-1, required=True)
@click.option("--no-enter", is_flag=True, help="Type the text without pressing Enter.")
@click.pass_context
def send(ctx: click.Context, name: str, text: tuple[str, ...], no_enter: bool) -> None:
    """Type TEXT into NAME's session, then press Enter (e.g. a prompt for the tool)."""
    _session(ctx, name).send(" ".join(text), enter=not no_enter)


@tmux.command()
@click.argument("name")
@click.option("--history", default=0, type=click.IntRange(min=0), help="Also this many lines of scrollback.")
@click.pass_context
def capture(ctx: click.Context, name: str, history: int) -> None:
    """Print what NAME's session shows."""
    click.echo(_session(ctx, name).capture(history=history), nl=False)

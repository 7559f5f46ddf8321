"""``cci shutdown`` and ``cci kill``: end sessions from the host, saving each first."""

from __future__ import annotations

import click

from cci_core.cli.sessions import confirm, manager_for, select


def _names_and_flags(command: click.Command) -> click.Command:
    click.argument("names", nargs=-1, metavar="[NAME]...")(command)
    click.option("--all", "everything", is_flag=True, help="Every cci session container (asks first).")(command)
    click.option("--force", is_flag=True, help="Do not ask for confirmation.")(command)
    return command


@click.command()
@click.option("--timeout", default=60, show_default=True, type=click.IntRange(min=0),
              help="Seconds to wait for a clean shutdown before forcing it.")
@click.pass_context
def shutdown(ctx: click.Context, names: tuple[str, ...], everything: bool, force: bool, timeout: int) -> None:
    """Stop sessions cleanly (forced after --timeout), save them, delete them unless persistent."""
    manager = manager_for(ctx)
    targets = select(manager.driver.list_containers(), names, everything)
    if everything and targets:
        confirm(f"Shut down {len(targets)} cci container(s)?", force)
    for info in targets:
        kept = manager.end(info.name, timeout=timeout)
        click.echo(f"{info.name}: {'shut down' if kept else 'already being ended by another cci process'}")


@click.command()
@click.pass_context
def kill(ctx: click.Context, names: tuple[str, ...], everything: bool, force: bool) -> None:
    """Stop sessions at once and delete them (persistent ones too), saving their session first."""
    manager = manager_for(ctx)
    targets = select(manager.driver.list_containers(), names, everything)
    if everything and targets:
        confirm(f"Kill and delete {len(targets)} cci container(s)?", force)
    for info in targets:
        done = manager.end(info.name, force=True, delete=True)
        click.echo(f"{info.name}: {'killed' if done else 'already being ended by another cci process'}")


shutdown = _names_and_flags(shutdown)
kill = _names_and_flags(kill)

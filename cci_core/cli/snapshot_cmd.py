"""``cci snapshot``: snapshots of persistent session containers (see :mod:`cci_core.snapshots`)."""

from __future__ import annotations

from collections.abc import Callable

import click

from cci_core.cli.sessions import manager_for
from cci_core.terminal_text import printable


@click.group()
def snapshot() -> None:
    """Snapshots of persistent session containers: create, list, restore (stopped), delete."""


@snapshot.command()
@click.argument("name")
@click.argument("snap", required=False)
@click.pass_context
def create(ctx: click.Context, name: str, snap: str | None) -> None:
    """Snapshot NAME (running or stopped) as SNAP (default: snap-<UTC time>)."""
    from cci_core import snapshots

    taken = snapshots.create(manager_for(ctx), name, snap)
    click.echo(f"{name}: snapshot {taken.name} taken")


@snapshot.command("list")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def list_(ctx: click.Context, name: str, fmt: str) -> None:
    """List NAME's snapshots, oldest first; AUTO marks those snapshot_on_start took."""
    from cci_core import snapshots

    found = snapshots.snapshots(manager_for(ctx), name)
    rows = [{"name": info.name, "created": info.created, "automatic": snapshots.is_automatic(info.name)}
            for info in found]
    if fmt == "json":
        import json

        click.echo(json.dumps({"container": name, "snapshots": rows}, indent=2))
        return
    from cci_core.cli.table import print_table

    print_table(["SNAPSHOT", "CREATED", "AUTO"],
                [[printable(row["name"]), row["created"], "yes" if row["automatic"] else ""] for row in rows],
                empty=f"{name} has no snapshots")


def _name_and_snap(command: Callable[..., None]) -> Callable[..., None]:
    """The arguments of a command on one snapshot: NAME, SNAP (and the click context)."""
    return click.argument("name")(click.argument("snap")(click.pass_context(command)))


@snapshot.command()
@_name_and_snap
def restore(ctx: click.Context, name: str, snap: str) -> None:
    """Put stopped NAME back to SNAP (its root filesystem; the workspace is not in it), and save its session again."""
    from cci_core import snapshots

    snapshots.restore(manager_for(ctx), name, snap)
    click.echo(f"{name}: restored to snapshot {printable(snap)}; its saved session updated")


@snapshot.command()
@_name_and_snap
def delete(ctx: click.Context, name: str, snap: str) -> None:
    """Delete NAME's snapshot SNAP."""
    from cci_core import snapshots

    snapshots.delete(manager_for(ctx), name, snap)
    click.echo(f"{name}: snapshot {printable(snap)} deleted")

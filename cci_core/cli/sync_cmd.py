"""``cci sync``: copy a session's workspace between the host and its container now (a session on a server that cannot
mount the workspace: a remote Incus)."""

from __future__ import annotations

import click

from cci_core.cli.sessions import manager_for, running_session
from cci_core.cli.signals import interruptible
from cci_core.cli.state import get_state
from cci_core.errors import UsageError


@click.command()
@click.argument("name", required=False)
@click.option("--to-host", "direction", flag_value="host", default=True,
              help="The container's copy back to the host (the default), as at a save.")
@click.option("--to-container", "direction", flag_value="container",
              help="The host's workspace into the container (the container's changes come back first, so that none "
                   "is lost; what the host removed is removed there).")
@click.pass_context
def sync(ctx: click.Context, name: str | None, direction: str) -> None:
    """Copy a running session's workspace now: NAME, or this workspace's (asks when it has several).

    Only for a session whose workspace is a copy (on a remote Incus); a mounted one is the same on both sides.
    Back to the host, a file changed on both sides since the last copy keeps the host's version and the
    container's is put beside it (NAME.cci-container-<time>), as at every save.
    """
    manager = manager_for(ctx)
    info, record = running_session(manager, name, str(get_state(ctx).config.workspace), verb="Sync",
                                   what="session's workspace can be copied")
    if not record.synced:
        raise UsageError(f"{info.name} has the workspace mounted, not copied: there is nothing to sync",
                         hint="'cci sync' is for sessions on a remote Incus")
    with interruptible():
        container = manager.driver.get(info.name)
        if direction == "container":
            manager.sync_in(container, record.workspace_path, again=True)
            click.echo(f"copied {record.workspace_path} into {info.name}")
            return
        report = manager.sync_back(container, record.workspace_path)
    click.echo(f"copied {info.name}'s workspace to {record.workspace_path}: {len(report.written)} written, "
               f"{len(report.removed)} removed, {len(report.conflicts)} kept beside the host's version")

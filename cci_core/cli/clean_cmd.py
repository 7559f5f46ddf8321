"""``cci clean``: finish stopped sessions and remove orphaned cci containers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from cci_core.cli.sessions import confirm, manager_for

if TYPE_CHECKING:
    from collections.abc import Mapping


def orphaned(labels: Mapping[str, str]) -> str | None:
    """Why a cci container is orphaned, or None when it is not.

    Orphans are containers no cci process will ever finish: a launch, a restart,
    a ``cci run``, a ``cci build`` or an end whose cci process died
    (:meth:`~cci_core.session.SessionManager.recover` puts each right).
    Saved persistent containers are never orphans.
    """
    from cci_core.session import ENDING, KIND_BUILD, KIND_RUN, LAUNCHING, RUNNING, SAVED, launcher_alive

    state = labels.get("state")
    if launcher_alive(labels.get("launcher", "")):
        return None  # its cci process is still at work
    if labels.get("kind") == KIND_BUILD:
        return "the 'cci build' that made it is gone"
    if state == LAUNCHING:
        if labels.get("previous") == SAVED:
            return "its restart was interrupted: stop it and keep it saved"
        return "its launch was interrupted"
    if state == RUNNING and labels.get("kind") == KIND_RUN:
        return "the 'cci run' that started it is gone"
    if state == ENDING:
        return "ending it was interrupted: end it again"
    return None


@click.command()
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only show what would be cleaned.")
@click.pass_context
def clean(ctx: click.Context, force: bool, dry_run: bool) -> None:
    """Finish stopped sessions (save, delete unless persistent) and delete orphaned cci containers.

    Never touches containers cci did not create, nor saved persistent ones.
    """
    from cci_core.session import KIND_BUILD, is_session

    manager = manager_for(ctx)
    listing = manager.driver.list_containers()
    ended = manager.ended(listing)
    orphans = [(info, reason) for info in listing
               if (is_session(info.labels) or info.labels.get("kind") == KIND_BUILD) and info not in ended
               and (reason := orphaned(info.labels))]
    plan = [(info, "stopped: save, then delete unless persistent") for info in ended] + orphans
    if not plan:
        click.echo("nothing to clean")
        return
    for info, reason in plan:
        click.echo(f"{info.name}: {reason}")
    if dry_run:
        return
    confirm(f"Clean {len(plan)} container(s)?", force)
    for info in ended:
        manager.finish(manager.driver.get(info.name))
    for info, _reason in orphans:
        container = manager.driver.get(info.name)
        if orphaned(container.labels()):  # still: another cci may have acted since the listing (or the prompt)
            manager.recover(container)
    click.echo(f"cleaned {len(plan)} container(s)")

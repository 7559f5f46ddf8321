"""``cci save``: save a running session now, as a detach would, and say where it went."""

from __future__ import annotations

import click

from cci_core.cli.sessions import manager_for, running_session
from cci_core.cli.signals import interruptible
from cci_core.cli.state import get_state
from cci_core.errors import CciError, NotFoundError, UsageError


@click.command()
@click.argument("name", required=False)
@click.pass_context
def save(ctx: click.Context, name: str | None) -> None:
    """Save a running session now: NAME, or this workspace's (asks when it has several).

    The tool's state is copied to ~/.cci/sessions-<tool>/<id>/ (without
    credentials), as at a detach; the session runs on. A save running at the
    same time (the attached cci's, every 5 minutes) goes first or after, whole.
    """
    from cci_core.context import SessionEvent
    from cci_core.session_store import SessionStore, now

    manager = manager_for(ctx)
    info, record = running_session(manager, name, str(get_state(ctx).config.workspace), verb="Save",
                                   what="session can be saved")
    if not record.tool:
        raise UsageError(f"{info.name} runs no tool (a 'cci run' container): it has no session to save")
    started = now()
    with interruptible():
        container, session = manager.running(info.name, info.labels)
        manager.save(session, container, SessionEvent.REQUESTED)
    try:
        saved = SessionStore().find(record.tool, session.session_id, session.workspace)
    except NotFoundError:
        saved = None
    if saved is None or saved.saved < started:
        raise CciError(f"session {session.session_id} of {info.name} was not saved this time (see the warning above)",
                       hint="its last save, if any, is kept")
    click.echo(f"saved session {saved.id} of {info.name} to {saved.path}")

"""``cci shell`` and ``cci attach``: the interactive session in tmux, and what happens when you leave it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from cci_core.cli.options import LATEST_SESSION, GlobalOptions, with_global_options
from cci_core.cli.sessions import check_network_policy, manager_for, refresh_networks
from cci_core.cli.signals import interruptible
from cci_core.cli.state import get_state
from cci_core.errors import CciError, NotFoundError, UsageError

if TYPE_CHECKING:
    from cci_core.context import LaunchContext
    from cci_core.driver import Container, ContainerInfo
    from cci_core.session import SessionManager


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
    listing = manager.driver.list_containers()
    manager.reconcile(listing)  # first: a session that just ended unwatched is saved before we look for it
    resume = _session_to_resume(ctx, wanted)
    with interruptible():
        with _resuming(manager, resume):
            reused = None
            if state.config.defaults.persistent:
                reused = manager.reuse(state.workspace, options.slot, session=resume)
            container, session = reused or manager.launch(LaunchRequest(
                state.workspace, slot=options.slot, storage=options.storage, resume_from=resume))
        tmux = _tmux(manager, container, session)
        if reused is None or not tmux.exists():  # a container launched just now has no tmux session yet
            tool = session.tool
            resuming = reused is not None or resume is not None
            tmux.start(tool.command(session.session_id, resume=resuming) if tool else None)
        _attach_and_settle(manager, container, session, tmux)


@contextlib.contextmanager
def _resuming(manager: SessionManager, session_id: str | None) -> Iterator[None]:
    """While launching: the only cci process resuming ``session_id``, which runs nowhere else."""
    if session_id is None:
        yield
        return
    from cci_core.session_store import SessionStore

    with SessionStore().resuming(manager.config.tool.name, session_id):
        _refuse_if_running(manager, session_id)
        yield


def _refuse_if_running(manager: SessionManager, session_id: str) -> None:
    """Two containers must never run one session: its saves would overwrite each other."""
    from cci_core.session import SAVED, is_session

    for info in manager.driver.list_containers():
        if is_session(info.labels) and info.labels.get("session") == session_id \
                and info.labels.get("state") != SAVED:
            raise UsageError(f"session {session_id} is still running in {info.name}",
                             hint=f"attach to it with 'cci attach {info.name}', or end it with 'cci shutdown {info.name}'")


def _session_to_resume(ctx: click.Context, wanted: str | None) -> str | None:
    """The id of the saved session ``--resume``/``--continue`` names (the workspace's latest without an id)."""
    if wanted is None:
        return None
    from cci_core.session_store import SessionStore

    state = get_state(ctx)
    store, tool = SessionStore(), state.config.tool.name
    if wanted == LATEST_SESSION:
        return store.latest(tool, state.workspace).id
    return store.find(tool, wanted, state.workspace).id


@click.command()
@click.argument("name", required=False)
@click.pass_context
def attach(ctx: click.Context, name: str | None) -> None:
    """Attach to a running session: NAME, or this workspace's (asks when it has several)."""
    from cci_core.session import is_session

    _require_terminal("attach")
    manager = manager_for(ctx)
    listing = manager.driver.list_containers()
    finished = set(manager.reconcile(listing))
    running = [info for info in listing
               if is_session(info.labels) and info.status == "running" and info.name not in finished]
    info = _pick(running, name, str(get_state(ctx).workspace.resolve()), listing)
    container = manager.driver.get(info.name)
    session = manager.context(info.name, info.labels)
    with interruptible():
        tmux = _tmux(manager, container, session)
        if not tmux.exists():  # the user left bash with 'exit', or a 'cci run' container: a new shell
            from cci_core.session import wait_for_session

            wait_for_session(container)  # a tmux started before systemd cleans /tmp loses its socket
            tmux.start()
        _attach_and_settle(manager, container, session, tmux)


def _pick(running: list[ContainerInfo], name: str | None, workspace: str,
          listing: list[ContainerInfo]) -> ContainerInfo:
    if name:
        for info in running:
            if info.name == name:
                return info
        if any(info.name == name for info in listing):
            raise UsageError(f"{name} is not a running cci session", hint="see 'cci list'")
        raise UsageError(f"no container named {name!r}", hint="see 'cci list'")
    ours = [info for info in running if info.labels.get("workspace") == workspace]
    if not ours:
        raise UsageError("no running session for this workspace", hint="start one with 'cci shell'")
    if len(ours) == 1:
        return ours[0]
    for number, info in enumerate(ours, start=1):
        click.echo(f"{number}) {info.name} (slot {info.labels.get('slot', '?')}, {info.labels.get('mode')})")
    choice = click.prompt("Attach to", type=click.IntRange(1, len(ours)), default=1)
    return ours[choice - 1]


def _tmux(manager: SessionManager, container: Container, session: LaunchContext):  # type: ignore[no-untyped-def]
    from cci_core.tmux import TmuxSession

    return TmuxSession(container, manager.driver.container_uid, manager.user_environment(session))


def _attach_and_settle(manager: SessionManager, container: Container, session: LaunchContext, tmux) -> None:  # type: ignore[no-untyped-def]
    """Attach; afterwards, end the session if its container stopped (a poweroff inside), else save it.

    Only tmux's word that it detached, or that the session's last shell exited,
    is taken for leaving; after anything else Incus's state and events decide.
    """
    from cci_core.context import SessionEvent
    from cci_core.tmux import AttachEnd

    name = container.name
    shutdown = f"'cci shutdown {name}' ends it"
    returns, anew = f"'cci attach {name}' returns to it, {shutdown}", f"'cci attach {name}' starts a new shell, {shutdown}"
    refresh_networks(manager)
    periodic = _PeriodicSave(manager, session, container)
    try:
        try:
            with periodic:
                end = tmux.attach()
        except CciError:
            if container.status() == "running":
                raise  # the attach could not start: a real failure
            end = AttachEnd.CUT_OFF  # the container stopped as it began
        if end is AttachEnd.DETACHED:
            note = f"detached from {name}: {returns}"
        elif end is AttachEnd.EXITED:
            note = f"the shell in {name} exited; the container keeps running: {anew}"
        else:
            note = _after_cut_off(container, tmux, returns, anew)
            if note is None:
                _end(manager, container, session)
                return
    except NotFoundError:
        if manager.driver.exists(name):
            raise
        click.echo(f"session ended: another cci command deleted {name}", err=True)
        return
    manager.plugins.hook.cci_session_save(ctx=session, container=container, event=SessionEvent.DETACH)
    click.echo(note, err=True)


def _after_cut_off(container: Container, tmux, returns: str, anew: str) -> str | None:  # type: ignore[no-untyped-def]
    """tmux was killed or the container went: None once Incus reports it stopped, else what to tell the user.

    A poweroff inside kills tmux in its last step, then stops the container at
    once, or, when a process ignores SIGTERM, after systemd's stop timeout.
    """
    from cci_core.session import QUICK_STOP, STOP_WAIT

    name = container.name
    if container.wait_stopped(QUICK_STOP):
        return None
    try:
        runs = tmux.exists()
    except CciError:  # no exec: it is going down
        runs = False
    if runs:  # a poweroff would have killed it: only the attach was cut off
        return f"the attach to {name} ended without a detach, but its tmux session runs on: {returns}"
    click.echo(f"waiting for {name} to stop (a poweroff inside takes up to {STOP_WAIT:.0f} s when a process "
               "ignores SIGTERM; Ctrl+C stops waiting)", err=True)
    if container.wait_stopped(STOP_WAIT - QUICK_STOP):
        return None
    return (f"the tmux session in {name} ended, but {name} did not stop within {STOP_WAIT:.0f} s; it keeps running: "
            f"{anew} (if it stops later, the next cci command ends the session)")


def _end(manager: SessionManager, container: Container, session: LaunchContext) -> None:
    """The container stopped: end the session (save it, delete it unless persistent), unless another cci does."""
    if manager.finish(container):
        kept = session.persistent
        click.echo(f"session ended: saved{'; container kept' if kept else ', container deleted'}", err=True)
    else:
        click.echo(f"session ended: another cci command is ending {container.name}", err=True)


#: seconds between saves of a session while the user is attached (a host crash loses at most this much)
SAVE_INTERVAL = 300.0


class _PeriodicSave:
    """Every :data:`SAVE_INTERVAL` seconds while attached: save the session, refresh due network plans."""

    def __init__(self, manager: SessionManager, session: LaunchContext, container: Container) -> None:
        import threading

        self._manager, self._session, self._container = manager, session, container
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="periodic-save", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=SAVE_INTERVAL)

    def _run(self) -> None:
        from cci_core.context import SessionEvent
        from cci_core.networking import refresh

        manager = self._manager
        while not self._stop.wait(SAVE_INTERVAL):
            try:
                manager.plugins.hook.cci_session_save(ctx=self._session, container=self._container,
                                                      event=SessionEvent.PERIODIC)
            except CciError:
                pass  # the terminal belongs to tmux now; the next save (at the latest, at the end) retries
            try:
                refresh(manager.driver, manager.plugins.registries)
            except CciError:
                pass  # likewise: the next tick, command or 'cci network refresh' retries

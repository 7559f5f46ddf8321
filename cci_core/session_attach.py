"""Attached to a session's tmux, and what comes after: saved on a detach, ended when the container stopped.

Only tmux's word that it detached, or that the session's last shell exited, is
taken for leaving; after anything else Incus's state and events decide (see
docs/lifecycle.md, *Leaving an attached session*). While the user is attached the
session is saved every :data:`SAVE_INTERVAL` seconds (:class:`PeriodicSave`).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from cci_core.context import SessionEvent
from cci_core.errors import CciError, NotFoundError

if TYPE_CHECKING:
    from cci_core.context import LaunchContext
    from cci_core.driver import Container, Driver
    from cci_core.plugin_manager import Plugins
    from cci_core.tmux import TmuxSession

#: after the attached tmux was cut off, how soon a poweroff inside stops the container (tmux dies in its last step)
QUICK_STOP = 3.0
#: how long a container whose tmux session is gone may take to stop: systemd's last step of a poweroff waits up
#: to its stop timeout (90 s by default) for processes that ignore SIGTERM before it kills them
STOP_WAIT = 120.0
#: how an ephemeral session's end is told when a detached process saves and deletes it ('cci list': ending)
BACKGROUND_END = "session ended: saved and deleted in the background"
#: seconds between saves of a session while the user is attached (a host crash loses at most this much)
SAVE_INTERVAL = 300.0
#: seconds into an attach before the network plans are refreshed: not while the tool's screen comes up, which
#: the refresh slowed down (Incus spends a few hundred ms of CPU on the listings it reads); an attach over sooner
#: refreshes as it ends
FIRST_REFRESH = 3.0


class Sessions(Protocol):
    """What an attach needs of the session object (:class:`cci_core.session.SessionManager`)."""

    driver: Driver
    plugins: Plugins

    def tmux(self, container: Container, ctx: LaunchContext) -> TmuxSession: ...

    warn: Callable[[str], None] | None

    def refresh_networks(self, report: Callable[[str], None] | None = None) -> None: ...

    def save(self, ctx: LaunchContext, container: Container, event: SessionEvent) -> None: ...

    @property
    def detached_end(self) -> object | None: ...

    def finish(self, container: Container, *, detach: bool = False) -> bool: ...

    def wait_ready(self, container: Container) -> None: ...


class Left(enum.Enum):
    """How an attach ended, as far as the session is concerned."""

    DETACHED = "detached"  # the user detached: the session runs on, saved
    SHELL_EXITED = "shell exited"  # the session's last shell exited: the container runs on, saved
    CUT_OFF = "cut off"  # the attach ended without a detach but tmux runs on: saved
    NOT_STOPPED = "not stopped"  # tmux is gone but the container did not stop in time: saved, left running
    ENDED = "ended"  # the container stopped: the session was ended (saved; deleted unless persistent)
    ENDED_ELSEWHERE = "ended elsewhere"  # the container stopped, and another cci process is ending it
    DELETED_ELSEWHERE = "deleted elsewhere"  # another cci command deleted the container


class AttachOutcome(NamedTuple):
    """What became of the session after an attach, and the line that tells the user."""

    left: Left
    note: str


def attach_and_settle(manager: Sessions, container: Container, ctx: LaunchContext, *,
                      command: Sequence[str] | None = None, fresh: bool = False,
                      say: Callable[[str], None] | None = None) -> AttachOutcome:
    """Attach; afterwards, end the session if its container stopped (a poweroff inside), else save it.

    :param command: what a new tmux session runs (the tool; None: a login shell).
    :param fresh: the container was launched just now: it has no tmux session, one is started without asking, by the
        attach itself (one exec less before the tool shows).
        Otherwise one is started only when none runs (for a shell, once the container is ready for it).
    :param say: prints a line while this waits (for a container to stop).
    """
    tmux = manager.tmux(container, ctx)
    if not fresh and not tmux.exists():  # the user left bash with 'exit', a 'cci run' container, a reused container
        if command is None:
            manager.wait_ready(container)  # a tmux started before systemd cleans /tmp loses its socket
        tmux.start(command)
    name = container.name
    shutdown = f"'cci shutdown {name}' ends it"
    returns = f"'cci attach {name}' returns to it, {shutdown}"
    anew = f"'cci attach {name}' starts a new shell, {shutdown}"
    from cci_core.limits import StopAtDeadline
    from cci_core.session_record import SessionRecord

    record = SessionRecord.from_labels(container.labels())
    try:
        try:
            with PeriodicSave(manager, ctx, container), StopAtDeadline(container, record.deadline) as deadline:
                end = tmux.attach(new=fresh, command=command)
        except CciError:
            if container.status() == "running":
                raise  # the attach could not start: a real failure
            from cci_core.tmux import AttachEnd

            end = AttachEnd.CUT_OFF  # the container stopped as it began
        outcome = _left(end, container, tmux, returns, anew, say)
        if outcome is None:
            ended = _end(manager, container, ctx)
            if deadline.reached and ended.left is Left.ENDED:
                from cci_core.limits import ended_by_duration

                return ended._replace(note=ended_by_duration(name, record, ended.note))
            return ended
    except NotFoundError:
        if manager.driver.exists(name):
            raise
        return AttachOutcome(Left.DELETED_ELSEWHERE, f"session ended: another cci command deleted {name}")
    manager.save(ctx, container, SessionEvent.DETACH)
    return outcome


def _left(end: object, container: Container, tmux: TmuxSession, returns: str, anew: str,
          say: Callable[[str], None] | None) -> AttachOutcome | None:
    from cci_core.tmux import AttachEnd

    name = container.name
    if end is AttachEnd.DETACHED:
        return AttachOutcome(Left.DETACHED, f"detached from {name}: {returns}")
    if end is AttachEnd.EXITED:
        return AttachOutcome(Left.SHELL_EXITED, f"the shell in {name} exited; the container keeps running: {anew}")
    return after_cut_off(container, tmux, returns, anew, say)


def after_cut_off(container: Container, tmux: TmuxSession, returns: str, anew: str,
                  say: Callable[[str], None] | None = None) -> AttachOutcome | None:
    """tmux was killed or the container went: None once Incus reports it stopped, else what became of it.

    A poweroff inside kills tmux in its last step, then stops the container at
    once, or, when a process ignores SIGTERM, after systemd's stop timeout.
    """
    name = container.name
    if container.wait_stopped(QUICK_STOP):
        return None
    try:
        runs = tmux.exists()
    except CciError:  # no exec: it is going down
        runs = False
    if runs:  # a poweroff would have killed it: only the attach was cut off
        return AttachOutcome(Left.CUT_OFF, f"the attach to {name} ended without a detach, but its tmux session "
                                           f"runs on: {returns}")
    if say is not None:
        say(f"waiting for {name} to stop (a poweroff inside takes up to {STOP_WAIT:.0f} s when a process "
            "ignores SIGTERM; Ctrl+C stops waiting)")
    if container.wait_stopped(STOP_WAIT - QUICK_STOP):
        return None
    return AttachOutcome(Left.NOT_STOPPED,
                         f"the tmux session in {name} ended, but {name} did not stop within {STOP_WAIT:.0f} s; it "
                         f"keeps running: {anew} (if it stops later, the next cci command ends the session)")


def _end(manager: Sessions, container: Container, ctx: LaunchContext) -> AttachOutcome:
    """The container stopped: end the session (save it, delete it unless persistent), unless another cci does.

    An ephemeral one's save and delete go on in a detached process (the user gets the terminal back at once);
    a persistent one is saved here (the next 'cci shell' reuses it, saved)."""
    if manager.finish(container, detach=not ctx.persistent):
        if ctx.persistent:
            return AttachOutcome(Left.ENDED, "session ended: saved; container kept")
        if manager.detached_end is not None:
            return AttachOutcome(Left.ENDED, BACKGROUND_END)
        return AttachOutcome(Left.ENDED, "session ended: saved, container deleted")
    return AttachOutcome(Left.ENDED_ELSEWHERE, f"session ended: another cci command is ending {container.name}")


class PeriodicSave:
    """While attached: refresh due network plans :data:`FIRST_REFRESH` seconds in, or at the end of an attach over
    sooner (what it has to say is told after the attach), then every :data:`SAVE_INTERVAL` seconds save the
    session and refresh again."""

    def __init__(self, manager: Sessions, ctx: LaunchContext, container: Container) -> None:
        self._manager, self._ctx, self._container = manager, ctx, container
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="periodic-save", daemon=True)
        self._notes: list[str] = []

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=SAVE_INTERVAL)
        for note in self._notes:
            if self._manager.warn is not None:
                self._manager.warn(note)

    def _run(self) -> None:
        from cci_core.networking import refresh

        manager = self._manager
        self._stop.wait(FIRST_REFRESH)
        try:
            manager.refresh_networks(report=self._notes.append)
        except Exception as exc:  # (never fatal, and this thread's saves must go on)
            self._notes.append(f"could not refresh network policies: {exc}")
        while not self._stop.wait(SAVE_INTERVAL):
            try:
                manager.save(self._ctx, self._container, SessionEvent.PERIODIC)
            except CciError:
                pass  # the terminal belongs to tmux now; the next save (at the latest, at the end) retries
            try:
                refresh(manager.driver, manager.plugins.registries)
            except CciError:
                pass  # likewise: the next tick, command or 'cci network refresh' retries

"""Snapshots of persistent session containers (``cci snapshot``, ``[defaults] snapshot_on_start``).

A snapshot holds the container's root filesystem (the container user's home with the tool's
state, and everything else inside); the workspace is a host directory and is not in it. A
restore puts the root filesystem back and keeps the container's configuration as it is
(cci's labels, mounts, network: the driver sees to it), with the container stopped; the
session's saved copy on the host is then saved again from the restored container, so that a
later ``--resume`` gets what the container holds.

While cci takes or restores a snapshot it holds the container as a lifecycle step does (a
compare-and-set of its state to ``ending``): a ``cci shell`` reusing it at that moment finds it
taken and launches another container instead, and a restore never meets a start. A snapshot
therefore records the container in that held state, never ``saved`` or ``running``: a restore
never shows another cci process a session it could take, even for a moment.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from cci_core.errors import CciError, UsageError
from cci_core.session_record import SessionRecord, State, launcher_id

if TYPE_CHECKING:
    from cci_core.config.schema import DefaultsConfig
    from cci_core.driver import Container, Driver, SnapshotInfo
    from cci_core.session import SessionManager

#: the names of automatic snapshots (``snapshot_on_start``) start with this; a user's may not
AUTO_PREFIX = "auto-"
#: the start of a name cci makes up for a user's snapshot taken without one
USER_PREFIX = "snap-"
#: a snapshot name cci takes: Incus's rule (1 to 64 characters, starting and ending with a letter or digit), kept
#: to the characters every Incus release and a file name take
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?\Z")
_AUTOMATIC = re.compile(rf"{AUTO_PREFIX}\d{{8}}-\d{{6}}(?:-\d+)?\Z")
NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"


def check_name(snapshot: str) -> None:
    """Refuse a name for a new snapshot that Incus would refuse, or that is cci's for automatic snapshots."""
    if not _NAME.match(snapshot):
        raise UsageError(f"snapshot name {snapshot!r} is not valid: use {NAME_RULE}")
    if snapshot.startswith(AUTO_PREFIX):
        raise UsageError(f"snapshot name {snapshot!r} starts with {AUTO_PREFIX!r}, which marks cci's automatic "
                         "snapshots (snapshot_on_start)", hint="pick another name")


def is_automatic(snapshot: str) -> bool:
    """Whether ``snapshot`` is one that ``snapshot_on_start`` took (only those are deleted by ``snapshot_keep``)."""
    return bool(_AUTOMATIC.match(snapshot))


def session_container(driver: Driver, name: str) -> tuple[Container, SessionRecord]:
    """Container ``name`` and its record, if it is a persistent session container (snapshots are for those)."""
    container = driver.get(name)
    record = SessionRecord.from_labels(container.labels())
    if not record.is_session:
        raise UsageError(f"{name} is not a cci session container; cci leaves it alone",
                         hint="use 'incus snapshot' for it")
    if not record.persistent:
        raise UsageError(f"{name} is an ephemeral session container: only persistent ones have snapshots",
                         hint="start a persistent session with 'cci shell --persistent'")
    return container, record


def _settled(manager: SessionManager, name: str) -> tuple[Container, SessionRecord]:
    """:func:`session_container`, once its session is finished if it ended while no cci process watched it (saved,
    as the next cci command would: a snapshot or a restore then starts from the saved session)."""
    container, record = session_container(manager.driver, name)
    if record.state is State.RUNNING and container.status() == "stopped":
        manager.finish(container)
        container, record = session_container(manager.driver, name)
    return container, record


def snapshots(manager: SessionManager, name: str) -> list[SnapshotInfo]:
    """The snapshots of session container ``name``, oldest first."""
    container, _record = session_container(manager.driver, name)
    return container.snapshots()


def _existing(container: Container, snapshot: str) -> SnapshotInfo:
    from cci_core.errors import NotFoundError

    for info in container.snapshots():
        if info.name == snapshot:
            return info
    raise NotFoundError(f"{container.name} has no snapshot {snapshot!r}",
                        hint=f"see 'cci snapshot list {container.name}'")


@contextlib.contextmanager
def _held(container: Container, record: SessionRecord, states: tuple[State, ...]) -> Iterator[None]:
    """The container taken from the lifecycle while the body runs (state ``ending``, this process its launcher), then
    given back as it was; refused unless it is in one of ``states``."""
    name = container.name
    busy = UsageError(f"{name} is being started or ended by another cci command", hint="try again once it is done")
    if record.state not in states:
        raise busy
    assert record.state is not None
    me = launcher_id()
    held = {"state": State.ENDING.value, "launcher": me}
    if not container.compare_and_set_labels(record.owner(), {**held, "previous": record.state.value}):
        raise busy
    back = {"state": record.state.value, "launcher": record.launcher or "",
            "previous": record.previous.value if record.previous else ""}
    try:
        yield
    except BaseException:
        with contextlib.suppress(CciError):  # (the first error matters)
            container.compare_and_set_labels(held, back)
        raise
    if not container.compare_and_set_labels(held, back):
        raise CciError(f"{name} was taken over by another cci command meanwhile; its state is theirs now",
                       hint="see 'cci list'")


def create(manager: SessionManager, name: str, snapshot: str | None = None) -> SnapshotInfo:
    """Snapshot session container ``name``, running or stopped, as ``snapshot`` (None: ``snap-<UTC time>``)."""
    container, record = _settled(manager, name)
    if snapshot is not None:
        check_name(snapshot)
        if any(info.name == snapshot for info in container.snapshots()):
            raise UsageError(f"{name} already has a snapshot {snapshot!r}",
                             hint=f"pick another name, or delete it first with 'cci snapshot delete {name} "
                                  f"{snapshot}'")
    with _held(container, record, (State.SAVED, State.RUNNING)):
        return _take(container, snapshot, USER_PREFIX)


def _take(container: Container, snapshot: str | None, prefix: str) -> SnapshotInfo:
    """Take ``snapshot``, or one named ``<prefix><UTC time>`` (``-2``, ``-3``... when that is taken)."""
    from cci_core.driver import ContainerExistsError

    if snapshot is not None:
        try:
            return container.create_snapshot(snapshot)
        except ContainerExistsError as exc:  # taken meanwhile
            raise UsageError(str(exc), hint="pick another name") from None
    base = f"{prefix}{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    taken = {info.name for info in container.snapshots()}
    for number in range(1, 100):
        name = base if number == 1 else f"{base}-{number}"
        if name in taken:
            continue
        try:
            return container.create_snapshot(name)
        except ContainerExistsError:
            continue  # another cci process's, just now
    raise CciError(f"{container.name}: no free snapshot name after {base}", hint="try again in a second")


def restore(manager: SessionManager, name: str, snapshot: str) -> None:
    """Put stopped session container ``name`` back to ``snapshot``, its labels and devices kept, and save its session
    again from it (the hook an end runs: ``cci_post_exit_save``)."""
    container, record = _settled(manager, name)
    _existing(container, snapshot)
    running = UsageError(f"{name} is running: stop it first with cci shutdown {name}")
    if container.status() != "stopped":
        raise running
    failure: CciError | None = None
    with _held(container, record, (State.SAVED,)):
        if container.status() != "stopped":  # started meanwhile, by hand
            raise running
        container.restore_snapshot(snapshot)
        try:
            ctx = manager.context(name, container.labels())
            manager.plugins.hook.cci_post_exit_save(ctx=ctx, container=container)
        except CciError as exc:
            failure = exc
    if failure is not None:
        raise CciError(f"{name} was restored to snapshot {snapshot}, but its saved session could not be updated "
                       f"({failure})", hint="the container holds the restored state; a --resume into a new "
                                            "container gets the state of the last save until the next one")


def delete(manager: SessionManager, name: str, snapshot: str) -> None:
    """Delete snapshot ``snapshot`` of session container ``name``."""
    container, _record = session_container(manager.driver, name)
    _existing(container, snapshot)
    container.delete_snapshot(snapshot)


def snapshot_on_start(container: Container, defaults: DefaultsConfig, report: Callable[[str], None]) -> None:
    """With ``[defaults] snapshot_on_start``: an automatic snapshot of a saved container about to start again, then
    the oldest automatic ones beyond ``snapshot_keep`` (0: no limit) deleted. A snapshot that fails refuses the
    start (the user asked for a way back before the agent runs); a deletion that fails is a warning."""
    if not defaults.snapshot_on_start:
        return
    try:
        _take(container, None, AUTO_PREFIX)
    except CciError as exc:
        raise CciError(f"{container.name} was not started: its automatic snapshot failed ({exc})",
                       hint="set [defaults] snapshot_on_start = false (CCI_DEFAULTS_SNAPSHOT_ON_START=false) to "
                            "start it without one") from None
    if defaults.snapshot_keep <= 0:
        return
    automatic = [info.name for info in container.snapshots() if is_automatic(info.name)]
    for old in automatic[:-defaults.snapshot_keep]:
        try:
            container.delete_snapshot(old)
        except CciError as exc:
            report(f"could not delete the old automatic snapshot {old} of {container.name}: {exc}")

"""What cci records on a session's container (its ``user.cci.*`` labels), as one typed record.

The label strings are the format containers of earlier releases carry, so the
record reads them as they are; a value it does not know reads as None (never an
error: the labels are on the host, but a container may come from another release).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar


class _Label(str, enum.Enum):
    """A label value: compares, prints and formats as its string (``enum.StrEnum`` needs Python 3.11)."""

    __str__ = str.__str__
    __format__ = str.__format__


class Kind(_Label):
    """What cci made a container for (``user.cci.kind``)."""

    SESSION = "session"  # an interactive tool session (cci shell)
    RUN = "run"  # a one-shot command (cci run)
    BUILD = "build"  # a container an image builder is working in (cci build)
    POOL = "pool"  # a warm container no launch has taken yet (cci_core.warm_pool)


class State(_Label):
    """Where a session is in its lifecycle (``user.cci.state``, ``user.cci.previous``; docs/lifecycle.md)."""

    LAUNCHING = "launching"
    RUNNING = "running"
    ENDING = "ending"
    SAVED = "saved"


class Mode(_Label):
    """Whether a session's container outlives the session (``user.cci.mode``)."""

    PERSISTENT = "persistent"
    EPHEMERAL = "ephemeral"


_E = TypeVar("_E", bound=enum.Enum)


def _member(cls: type[_E], value: str | None) -> _E | None:
    try:
        return cls(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class SessionRecord:
    """A container's ``user.cci.*`` labels (each field one label; None: the label is absent or unknown)."""

    kind: Kind | None = None
    workspace: str | None = None  # the workspace's real path
    slot: int | None = None
    tool: str | None = None  # the tool plugin's name; empty for a run
    mode: Mode | None = None
    session: str | None = None  # the session id
    state: State | None = None
    launcher: str | None = None  # '<boot id>:<pid>' of the cci process at work on it
    previous: State | None = None  # the state before 'launching' (a restart) or 'ending'
    network: str | None = None  # the network policy it is under
    limits: str | None = None  # the [limits] it was started under ('cpu=2 memory=4GiB ...', cci_core.limits.summary)
    deadline: int | None = None  # when the session must end ([limits] duration), in seconds since the epoch
    synced: bool | None = None  # the workspace is a copy, synced back at saves (a server that cannot mount it)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> SessionRecord:
        """Read the labels as the driver returns them (without the ``user.cci.`` prefix)."""
        slot, deadline = labels.get("slot"), labels.get("deadline")
        return cls(
            kind=_member(Kind, labels.get("kind")),
            workspace=labels.get("workspace"),
            slot=int(slot) if slot is not None and slot.isascii() and slot.isdigit() else None,
            tool=labels.get("tool"),
            mode=_member(Mode, labels.get("mode")),
            session=labels.get("session"),
            state=_member(State, labels.get("state")),
            launcher=labels.get("launcher"),
            previous=_member(State, labels.get("previous")),
            network=labels.get("network"),
            limits=labels.get("limits"),
            deadline=int(deadline) if deadline is not None and deadline.isascii() and deadline.isdigit() else None,
            synced=True if labels.get("synced") == "True" else None,
        )

    def to_labels(self) -> dict[str, str]:
        """The labels to write: every field that is set, as the string the label format uses."""
        labels = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                labels[field.name] = value.value if isinstance(value, enum.Enum) else str(value)
        return labels

    def but(self, **changes: object) -> SessionRecord:
        """A copy with ``changes``."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_session(self) -> bool:
        """Whether it marks a container cci made for a session or a run (not a low-level one, not a build)."""
        return self.kind in (Kind.SESSION, Kind.RUN) and self.workspace is not None and self.session is not None

    @property
    def persistent(self) -> bool:
        return self.mode is Mode.PERSISTENT

    @property
    def workspace_path(self) -> Path:
        """The workspace as a path (``/`` when the label is missing)."""
        return Path(self.workspace or "/")

    def orphaned(self) -> str | None:
        """Why the container is orphaned, or None when it is not.

        Orphans are containers no cci process will ever finish: a launch, a restart,
        a ``cci run``, a ``cci build`` or an end whose cci process died
        (:meth:`~cci_core.session.SessionManager.recover` puts each right).
        Saved persistent containers are never orphans.
        """
        if launcher_alive(self.launcher or ""):
            return None  # its cci process is still at work
        if self.kind is Kind.BUILD:
            return "the 'cci build' that made it is gone"
        if self.state is State.LAUNCHING:
            if self.previous is State.SAVED:
                return "its restart was interrupted: stop it and keep it saved"
            return "its launch was interrupted"
        if self.state is State.RUNNING and self.kind is Kind.RUN:
            return "the 'cci run' that started it is gone"
        if self.state is State.ENDING:
            return "ending it was interrupted: end it again"
        return None

    def owner(self) -> dict[str, str]:
        """The labels a compare-and-set expects to take the container from whoever works on it now."""
        return {"state": self.state.value if self.state else "", "launcher": self.launcher or ""}


def is_session(labels: Mapping[str, str]) -> bool:
    """Whether labels mark a container cci made for a session or a run (see :attr:`SessionRecord.is_session`)."""
    return SessionRecord.from_labels(labels).is_session


def launcher_id() -> str:
    """This process, unique on this host across reboots: ``<boot id>:<pid>``."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = "unknown"
    return f"{boot}:{os.getpid()}"


def launcher_alive(label: str) -> bool:
    """Whether the process a ``launcher`` label names still runs (on this host, this boot)."""
    boot, _, pid = label.rpartition(":")
    if boot != launcher_id().rpartition(":")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (a detached end whose parent's parent never reaps it: PID 1
    of a container that is no init, say); where /proc cannot tell, it is taken to run."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[:1] == [b"Z"]
    except OSError:
        return False

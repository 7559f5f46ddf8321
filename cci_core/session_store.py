"""Saved sessions on the host: ``~/.cci/sessions-<tool>/<id>/``, one directory per session.

Each holds a copy of the tool's state directory (e.g. ``.claude/``, without
credential files) and ``metadata.json``::

    {"id": "...", "tool": "claude", "workspace": "/real/path", "container": "cci-1a2b3c4d-1",
     "slot": 1, "persistent": false, "created": "2026-11-28T10:00:00+00:00", "saved": "..."}

A save builds the new copy beside the old one and swaps it in with renames,
so a reader (or a crash) sees the previous save or the new one, never half of
one. Everything is private to the user (directories 0700, files 0600). What a
killed save leaves behind (a staging copy, filtered as it was written, so it
holds no credentials) is removed by the next command (:meth:`SessionStore.tidy`),
and so are the lock files of sessions that no longer exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from cci_core.errors import CciError, NotFoundError, UsageError
from cci_core.layout import state_dir
from cci_core.private_files import write_private

#: a session id: letters, digits, dots, dashes and underscores, not starting with a dot (no paths)
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
METADATA = "metadata.json"


class SavedSession(NamedTuple):
    """One saved session, as its ``metadata.json`` describes it."""

    id: str
    tool: str
    workspace: str
    container: str
    slot: int
    persistent: bool
    created: str
    saved: str
    path: Path

    def as_json(self) -> dict[str, Any]:
        """The ``metadata.json`` document (without the path)."""
        return {key: value for key, value in self._asdict().items() if key != "path"}


def default_root() -> Path:
    """``~/.cci`` of the invoking user."""
    return state_dir()


def validate_id(session_id: str) -> str:
    """``session_id`` if it is a plain id; a :class:`UsageError` for anything path-like."""
    if not _VALID_ID.match(session_id):
        raise UsageError(f"{session_id!r} is not a valid session id",
                         hint="ids are letters, digits, '.', '-' and '_'; see 'cci list --all'")
    return session_id


def _remove_tree(path: Path, ignore_errors: bool = False) -> None:
    import shutil  # (imported here: most commands never remove a tree)

    shutil.rmtree(path, ignore_errors=ignore_errors)


def now() -> str:
    """The current time as saved in metadata (UTC, ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SessionStore:
    """The saved sessions of every tool under one root (default ``~/.cci``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()

    def tool_dir(self, tool: str) -> Path:
        return self.root / f"sessions-{tool}"

    def sessions(self, tool: str | None = None) -> list[SavedSession]:
        """Saved sessions (of one tool, or all), newest save first; unreadable entries are skipped."""
        pattern = f"sessions-{tool}/*/{METADATA}" if tool else f"sessions-*/*/{METADATA}"
        found = [session for session in map(_read, self.root.glob(pattern)) if session is not None]
        return sorted(found, key=lambda session: session.saved, reverse=True)

    def latest(self, tool: str, workspace: Path) -> SavedSession:
        """The newest saved session of ``tool`` for ``workspace`` (its real path)."""
        real = str(workspace.resolve())
        for session in self.sessions(tool):
            if session.workspace == real:
                return session
        raise NotFoundError(f"no saved {tool} session for {real}", hint="start one with 'cci shell'")

    @contextlib.contextmanager
    def resuming(self, tool: str, session_id: str) -> Iterator[None]:
        """Be the one cci process resuming ``session_id`` until the block ends (the container carrying it
        exists then): another is refused at once, so one session never runs in two containers."""
        tool_dir = self.tool_dir(tool)
        _private_dirs(tool_dir)
        with _locked(tool_dir, f".resume-{validate_id(session_id)}.lock", wait=False) as mine:
            if not mine:
                raise UsageError(f"session {session_id} is being resumed by another cci command",
                                 hint="attach to it with 'cci attach' once it runs")
            yield

    def tidy(self) -> None:
        """Remove what killed saves left behind (staging and retired copies whose save lock is free) and the
        lock files of sessions that no longer exist."""
        for tool_dir in self.root.glob("sessions-*"):
            if tool_dir.is_symlink() or not tool_dir.is_dir():
                continue
            for path in tool_dir.iterdir():
                name = path.name
                for prefix in (".saving-", ".retired-"):
                    session_id = name[len(prefix):-9] if name.startswith(prefix) and len(name) > len(prefix) + 9 \
                        else ""
                    if session_id and _VALID_ID.match(session_id):
                        with _locked(tool_dir, f".save-{session_id}.lock", wait=False) as free:
                            if free:
                                _remove_tree(path, ignore_errors=True)
                for kind in (".save-", ".resume-"):
                    session_id = name[len(kind):-len(".lock")] if name.startswith(kind) and name.endswith(".lock") \
                        else ""
                    if session_id and _VALID_ID.match(session_id) and not (tool_dir / session_id).exists():
                        _remove_lock(tool_dir, name, tool_dir / session_id)

    def find(self, tool: str, session_id: str, workspace: Path) -> SavedSession:
        """Saved session ``session_id`` of ``tool``, which must belong to ``workspace``."""
        path = self.tool_dir(tool) / validate_id(session_id)
        session = _read(path / METADATA)
        if session is None:
            raise NotFoundError(f"no saved {tool} session {session_id!r}", hint="see 'cci list --all'")
        real = str(workspace.resolve())
        if session.workspace != real:
            raise UsageError(f"session {session_id} belongs to another workspace ({session.workspace})",
                             hint="resume it from that directory; sessions are workspace-scoped")
        return session

    def save(self, metadata: SavedSession, fill: Callable[[Path], None]) -> SavedSession:
        """Save a session: ``fill(directory)`` writes the state into a fresh directory, swapped in atomically.

        ``created`` is kept from an earlier save of the same id; ``saved`` is now.
        """
        tool_dir = self.tool_dir(metadata.tool)
        target = tool_dir / validate_id(metadata.id)
        try:
            _private_dirs(tool_dir)
        except OSError as exc:  # ~/.cci unwritable, or not a directory
            raise _not_saved(metadata.id, target, exc) from exc
        with contextlib.suppress(OSError):  # leftovers that cannot be removed now do not stop this save
            self.tidy()
        earlier = _read(target / METADATA)
        session = metadata._replace(path=target, saved=now(),
                                    created=earlier.created if earlier else metadata.created or now())
        staging = tool_dir / f".saving-{metadata.id}-{uuid.uuid4().hex[:8]}"
        try:
            # two saves of one session at once (a periodic one and a detach, two attached terminals): one
            # after the other, so that the later copy is the one kept
            with _locked(tool_dir, f".save-{metadata.id}.lock"):
                staging.mkdir(mode=0o700)
                fill(staging)
                write_private(staging / METADATA, json.dumps(session.as_json(), indent=2) + "\n")
                _swap_in(staging, target)
        except BaseException as exc:
            _remove_tree(staging, ignore_errors=True)
            if isinstance(exc, OSError):  # disk full, ~/.cci unwritable...: the earlier copy stays
                raise _not_saved(metadata.id, target, exc) from exc
            raise
        return session


def _not_saved(session_id: str, target: Path, exc: OSError) -> CciError:
    return CciError(f"could not save session {session_id} to {target}: {exc.strerror or exc}",
                    hint="free some space or fix the permissions of ~/.cci; the last save is kept")


def _read(path: Path) -> SavedSession | None:
    try:
        data = json.loads(path.read_text())
        return SavedSession(
            id=str(data["id"]), tool=str(data["tool"]), workspace=str(data["workspace"]),
            container=str(data.get("container", "")), slot=int(data.get("slot", 0)),
            persistent=bool(data.get("persistent", False)), created=str(data.get("created", "")),
            saved=str(data.get("saved", "")), path=path.parent,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _private_dirs(path: Path) -> None:
    """Create ``path`` (and ``~/.cci``) as 0700 directories; tighten them if they exist."""
    for directory in (path.parent, path):
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)


@contextlib.contextmanager
def _locked(directory: Path, name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``directory/name`` (released when the process dies, too).

    Without ``wait``, yields False at once when another process holds it.
    """
    import fcntl

    while True:
        fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        if _same_file(fd, directory / name):
            break
        os.close(fd)  # removed (tidied) while we waited for it: lock the file that is there now
    try:
        yield True
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


def _remove_lock(directory: Path, name: str, session: Path) -> None:
    """Remove lock file ``name`` if no process holds it and ``session`` still does not exist."""
    with _locked(directory, name, wait=False) as free:
        if free and not session.exists():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging``: the old copy is renamed away first and removed last."""
    retired = None
    if target.exists():
        retired = target.with_name(f".retired-{target.name}-{uuid.uuid4().hex[:8]}")
        target.rename(retired)
    staging.rename(target)
    if retired is not None:
        _remove_tree(retired, ignore_errors=True)

"""The workspace copied into a container and back, for a server that cannot mount it (a remote Incus).

Into the container: the host workspace is walked through directory descriptors (no symlink followed, only regular
files opened) and written as one stream (:meth:`Container.write_tree`), the excluded paths left out. Back: the
container's copy is read as one stream (:meth:`Container.read_tree`), which is the container's word: every name is
checked, nothing is written through a link or outside the workspace, a link leading out of it is not made, and each
file lands under a temporary name in its directory before it is renamed into place.

What was synced last is remembered (a manifest on the host: each path's content digest and the host file's stamp
then), so that a sync back can tell who changed what since: a change in the container replaces the host's file when
the host left it alone; when both changed it, the host's version stays and the container's is kept beside it as
``NAME.cci-container-<time>``, and the report says so. A file the container removed is removed on the host only if
the host left it alone. Nothing is removed after a read that did not finish.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import posixpath
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from cci_core.driver import UNREADABLE, TreeEntry, TreeLimits
from cci_core.errors import UsageError
from cci_core.host_files import SafeDirectory, current_umask
from cci_core.private_files import read_json, replace_private_json
from cci_core.tree_copy import entry_parts

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.driver import Container

#: the manifest's format
VERSION = 1
#: what a temporary file on the host starts with while a container's file is written
_TEMPORARY = ".cci-sync-"
_CHUNK = 1 << 16


class WorkspaceTooLarge(UsageError):
    """The workspace is over ``[sync] max_size``."""


class Record(NamedTuple):
    """A path as it was at the last sync: its kind, its content's digest (a link: its target), and the host
    file's ``(size, mtime_ns, inode)`` then (None: unknown, compare the content)."""

    kind: str
    digest: str
    stamp: tuple[int, int, int] | None = None


@dataclass
class SyncReport:
    """What a sync back did."""

    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: changed on both sides: (the path, the name the container's version got beside it)
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    #: left alone: a link leading out of the workspace, a name that is not allowed, a host file where the
    #: container has a directory...
    skipped: list[str] = field(default_factory=list)


class Excludes:
    """``.gitignore``-style patterns: one without ``/`` matches a name at any depth, one with ``/`` the path from
    the workspace's root; ``*`` does not cross ``/`` there, ``**`` does; a trailing ``/`` matches directories."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(pattern.strip() for pattern in patterns if pattern.strip())

    def __call__(self, path: str, directory: bool) -> bool:
        name = path.rsplit("/", 1)[-1]
        for pattern in self.patterns:
            only_directories = pattern.endswith("/")
            pattern = pattern.rstrip("/")
            if only_directories and not directory:
                continue
            if "/" not in pattern:
                if fnmatch.fnmatchcase(name, pattern):
                    return True
            elif _path_match(path, pattern.lstrip("/")):
                return True
        return False


def _path_match(path: str, pattern: str) -> bool:
    parts, wanted = path.split("/"), pattern.split("/")

    def match(at: int, want: int) -> bool:
        if want == len(wanted):
            return at == len(parts)
        if wanted[want] == "**":
            return any(match(next_at, want + 1) for next_at in range(at, len(parts) + 1))
        return at < len(parts) and fnmatch.fnmatchcase(parts[at], wanted[want]) and match(at + 1, want + 1)

    return match(0, 0)


def sync_limits(config: Config) -> TreeLimits:
    """The bounds of a copy either way: ``[sync] max_size`` in all (and for one file), an hour, ten minutes idle."""
    from cci_core.limits import parse_size

    size = parse_size(config.sync.max_size)
    return TreeLimits(max_file=size, max_bytes=size, timeout=3600, idle=600)


def protected_patterns(config: Config) -> list[str]:
    """``[security] protected_paths`` as excludes of the copy back: what the agent must not change on the host
    never comes back (where a mount would have made them read-only)."""
    return ["/" + path.strip("/") for path in config.security.protected_paths if path.strip("/")]


def manifest_path(state: Path, container: str) -> Path:
    """Where the manifest of ``container``'s workspace is kept, below cci's state directory ``state``."""
    return state / "sync" / f"{container}.json"


def load_manifest(path: Path) -> dict[str, Record]:
    """The manifest at ``path`` (empty when there is none: every difference is then a conflict, never lost)."""
    document = read_json(path)
    if not isinstance(document, dict) or document.get("version") != VERSION:
        return {}
    records: dict[str, Record] = {}
    for name, (kind, digest, stamp) in (document.get("paths") or {}).items():
        records[name] = Record(kind, digest, tuple(stamp) if stamp else None)  # type: ignore[arg-type]
    return records


def save_manifest(path: Path, records: dict[str, Record]) -> None:
    replace_private_json(path, {"version": VERSION, "paths": {name: list(record) for name, record in records.items()}})


# --- into the container ----------------------------------------------------------------------------------------


def sync_to_container(container: Container, workspace: Path, target: str, *, uid: int, excludes: Excludes,
                      limits: TreeLimits, previous: dict[str, Record] | None = None) -> dict[str, Record]:
    """Write the host ``workspace`` (less ``excludes``) to ``target`` in ``container``, owned by ``uid``; the
    manifest of what was written. What the ``previous`` manifest has and the host no longer does is removed
    there (a copy into a container that has one: its own changes must have come back first)."""
    records: dict[str, Record] = {}
    container.write_tree(target, _host_entries(workspace, excludes, limits, records), uid=uid, gid=uid)
    gone = sorted((path for path in previous or {} if path not in records
                   and not excludes(path, (previous or {})[path].kind == "directory")),
                  key=lambda path: path.count("/"), reverse=True)
    for first in range(0, len(gone), 500):  # (deepest first: a directory after what it held)
        container.exec(["sh", "-c", 'cd -- "$1" && shift && for p; do rm -f -- "$p" 2>/dev/null || '
                                    'rmdir -- "$p" 2>/dev/null; done; exit 0', "sh", target, *gone[first:first + 500]])
    return records


def _host_entries(workspace: Path, excludes: Excludes, limits: TreeLimits,
                  records: dict[str, Record]) -> Iterator[TreeEntry]:
    """The workspace as entries (its root first, with its own mode), each file hashed as it is read; a file's
    record is made once the writer has read it (when the next entry is asked for)."""
    with SafeDirectory.at(workspace) as root:
        yield TreeEntry(".", "directory", stat.S_IMODE(os.fstat(root.fd).st_mode))
        pending: list[tuple[str, _Hashing, tuple[int, int, int]]] = []
        total = 0
        for entry, info in _walk(root, "", excludes):
            total += entry.size
            if total > limits.max_bytes:
                raise WorkspaceTooLarge(f"the workspace {workspace} is over [sync] max_size "
                                        f"({limits.max_bytes >> 20} MiB) to copy into the container",
                                        hint="leave out what the session does not need with [sync] exclude, "
                                             "or raise [sync] max_size")
            for name, hashing, stamp in pending:
                records[name] = Record("file", hashing.hexdigest(), stamp)
            pending.clear()
            if entry.kind == "file" and entry.data is not None:
                hashing = _Hashing(entry.data)
                pending.append((entry.path, hashing, (info.st_size, info.st_mtime_ns, info.st_ino)))
                entry = entry._replace(data=hashing)  # type: ignore[arg-type]
            elif entry.kind == "symlink":
                records[entry.path] = Record("symlink", _link_digest(entry.target))
            elif entry.kind == "directory":
                records[entry.path] = Record("directory", "")
            yield entry
        for name, hashing, stamp in pending:
            records[name] = Record("file", hashing.hexdigest(), stamp)


def _walk(directory: SafeDirectory, prefix: str, excludes: Excludes) -> Iterator[tuple[TreeEntry, os.stat_result]]:
    for name in directory.names():
        info, path = directory.lstat(name), prefix + name
        if info is None or excludes(path, stat.S_ISDIR(info.st_mode)):
            continue
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            target = directory.readlink(name)
            if target is not None:
                yield TreeEntry(path, "symlink", target=target), info
        elif stat.S_ISDIR(info.st_mode):
            yield TreeEntry(path, "directory", mode), info
            with directory.directory(name) as child:
                yield from _walk(child, f"{path}/", excludes)
        elif stat.S_ISREG(info.st_mode):
            with directory.open_file(name) as handle:
                opened = os.fstat(handle.fileno())
                yield TreeEntry(path, "file", mode, opened.st_size, data=handle), opened


class _Hashing:
    """A file being read, its SHA-256 taken on the way."""

    def __init__(self, source: BinaryIO) -> None:
        self._source, self._digest = source, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _link_digest(target: str) -> str:
    return "link:" + target


# --- back to the host ------------------------------------------------------------------------------------------


def sync_to_host(container: Container, source: str, workspace: Path, records: dict[str, Record], *,
                 excludes: Excludes, limits: TreeLimits) -> tuple[SyncReport, dict[str, Record]]:
    """Bring ``source`` in ``container`` back into the host ``workspace`` (see the module); the report, and the
    manifest to keep for the next sync."""
    report = SyncReport()
    applier = _Applier(workspace, records, excludes, report)
    try:
        with container.read_tree(source, limits) as entries:
            applier.apply_all(entries)
        applier.remove_gone()
    finally:
        applier.close()
    return report, applier.records


class _Applier:
    def __init__(self, workspace: Path, records: dict[str, Record], excludes: Excludes, report: SyncReport) -> None:
        self.records, self.excludes, self.report = dict(records), excludes, report
        self.last = records  # as at the last sync (only read)
        self.seen: set[str] = set()
        self.unread: list[str] = []  # below these nothing was read: nothing there is removed
        self.directories: dict[str, SafeDirectory | None] = {"": SafeDirectory.at(workspace)}
        self.tag = time.strftime("%Y%m%d-%H%M%S")

    def close(self) -> None:
        for directory in self.directories.values():
            if directory is not None:
                directory.close()

    def apply_all(self, entries: Iterable[TreeEntry]) -> None:
        for entry in entries:
            if entry_parts(entry.path) == ():
                continue  # the root
            path = _clean(entry.path)
            if path is None:
                self.report.skipped.append(entry.path)
                continue
            if entry.kind == UNREADABLE or (entry.kind == "file" and entry.data is None):
                self.unread.append(path)
                self.seen.add(path)
                continue
            self.seen.add(path)
            if self.excludes(path, entry.kind == "directory"):
                continue
            parent_path, _, name = path.rpartition("/")
            parent = self._directory(parent_path)
            if parent is None:
                self.report.skipped.append(path)
            elif entry.kind == "directory":
                self._directory_entry(parent, path, name, entry.mode)
            elif entry.kind == "symlink":
                self._link_entry(parent, path, name, entry.target)
            elif entry.kind == "file":
                self._file_entry(parent, path, name, entry)

    # -- the kinds ---------------------------------------------------------------------------------------------

    def _directory_entry(self, parent: SafeDirectory, path: str, name: str, mode: int) -> None:
        try:
            directory = parent.directory(name, create=True, mode=mode & 0o777 or 0o700)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
                raise
            self.directories[path] = None  # a link or file on the host there: what the container has below stays
            self.report.skipped.append(path)
            return
        self.directories[path] = directory
        self.records[path] = Record("directory", "")

    def _link_entry(self, parent: SafeDirectory, path: str, name: str, target: str) -> None:
        if not _inside(path, target):
            self.report.skipped.append(path)  # a link out of the workspace is not made on the host
            return
        digest = _link_digest(target)
        temporary = f"{_TEMPORARY}{uuid.uuid4().hex}"
        parent.symlink(temporary, target, replace=False)
        self._settle(parent, path, name, temporary, digest, "symlink")

    def _file_entry(self, parent: SafeDirectory, path: str, name: str, entry: TreeEntry) -> None:
        temporary = f"{_TEMPORARY}{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        assert entry.data is not None
        with parent.create(temporary, 0o600) as writer:
            while chunk := entry.data.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
            writer.finish()
            os.fchmod(writer.fd, entry.mode & 0o777 & ~current_umask())
        self._settle(parent, path, name, temporary, digest.hexdigest(), "file")

    def _settle(self, parent: SafeDirectory, path: str, name: str, temporary: str, digest: str, kind: str) -> None:
        """Put the container's version (written at ``temporary``) in place, beside the host's, or nowhere."""
        last = self.last.get(path)
        if last is not None and last.digest == digest:  # the container left it as it was: the host's stays
            parent.remove(temporary)
            return
        host = self._host_digest(parent, name, last)
        if host == digest:  # the same on both sides already
            parent.remove(temporary)
            self.records[path] = Record(kind, digest, _stamp(parent, name))
        elif host is None or (last is not None and host == last.digest):  # the host left it alone: replaced
            try:
                os.rename(temporary, name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
            except OSError as exc:  # a directory there: the container's version goes beside it
                if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
                self._beside(parent, path, name, temporary, digest, kind)
                return
            self.records[path] = Record(kind, digest, _stamp(parent, name))
            self.report.written.append(path)
        else:
            self._beside(parent, path, name, temporary, digest, kind)

    def _beside(self, parent: SafeDirectory, path: str, name: str, temporary: str, digest: str, kind: str) -> None:
        kept = f"{name}.cci-container-{self.tag}"
        for attempt in range(1, 100):
            if parent.lstat(kept) is None:
                break
            kept = f"{name}.cci-container-{self.tag}-{attempt}"
        os.rename(temporary, kept, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
        self.records[path] = Record(kind, digest, None)  # the container's, which the host's is not
        self.report.conflicts.append((path, posixpath.join(posixpath.dirname(path), kept)))

    def _host_digest(self, parent: SafeDirectory, name: str, last: Record | None) -> str | None:
        """The host's version of ``name``: its digest (a link: its target), None when there is nothing, ``""``
        for what is neither a file nor a link (a directory, a FIFO...)."""
        info = parent.lstat(name)
        if info is None:
            return None
        if stat.S_ISLNK(info.st_mode):
            return _link_digest(parent.readlink(name) or "")
        if not stat.S_ISREG(info.st_mode):
            return ""
        if last is not None and last.stamp is not None and \
                (info.st_size, info.st_mtime_ns, info.st_ino) == tuple(last.stamp):
            return last.digest  # untouched since the last sync
        digest = hashlib.sha256()
        with parent.open_file(name) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    # -- what the container no longer has --------------------------------------------------------------------------

    def remove_gone(self) -> None:
        """Remove on the host what the container removed since the last sync, where the host left it alone."""
        gone = [path for path in self.last if path not in self.seen and not self._under_unread(path)
                and not self.excludes(path, self.last[path].kind == "directory")]
        for path in sorted(gone, key=lambda item: item.count("/"), reverse=True):
            last = self.records.pop(path)
            parent_path, _, name = path.rpartition("/")
            parent = self._directory(parent_path)
            if parent is None:
                continue
            if last.kind == "directory":
                try:
                    os.rmdir(name, dir_fd=parent.fd)
                    self.report.removed.append(path)
                except OSError:
                    pass  # the host put something in it, or it is not a directory any more: it stays
            elif self._host_digest(parent, name, last) == last.digest:
                parent.remove(name)
                self.report.removed.append(path)

    def _under_unread(self, path: str) -> bool:
        return any(path == unread or path.startswith(unread + "/") for unread in self.unread)

    def _directory(self, path: str) -> SafeDirectory | None:
        """The host directory at ``path`` (opened a name at a time, no link followed), or None when it is not one."""
        if path in self.directories:
            return self.directories[path]
        parent_path, _, name = path.rpartition("/")
        parent = self._directory(parent_path)
        directory = None
        if parent is not None:
            try:
                directory = parent.directory(name)
            except OSError:
                directory = None
        self.directories[path] = directory
        return directory


def _clean(path: str) -> str | None:
    """``path`` as a relative path of plain names joined by ``/``, or None when it could leave the workspace or is a
    name cci uses for its temporary files."""
    parts = entry_parts(path)
    if not parts or any(part.startswith(_TEMPORARY) for part in parts):
        return None
    return "/".join(parts)


def _inside(path: str, target: str) -> bool:
    """Whether a link at ``path`` to ``target`` leads to a place inside the workspace (by its text)."""
    if not target or target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved != ".." and not resolved.startswith("../")


def _stamp(parent: SafeDirectory, name: str) -> tuple[int, int, int] | None:
    info = parent.lstat(name)
    return (info.st_size, info.st_mtime_ns, info.st_ino) if info is not None and stat.S_ISREG(info.st_mode) else None


def describe(report: SyncReport) -> list[str]:
    """The lines that tell the user what a sync back did that they should know: the conflicts and what was left."""
    lines = [f"{path} changed on both sides: the host's version stays, the container's is {kept}"
             for path, kept in report.conflicts]
    if report.skipped:
        shown = ", ".join(report.skipped[:5]) + (f" and {len(report.skipped) - 5} more" if len(report.skipped) > 5
                                                 else "")
        lines.append(f"not brought back (a link out of the workspace, or a link or file on the host where the "
                     f"container has a directory): {shown}")
    return lines


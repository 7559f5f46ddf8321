"""Files in an Incus instance: single files, and whole trees in both directions.

Pushes go through the files API (a POST creates one file, directory or symlink
with the owner and mode in ``X-Incus-*`` headers), or within a :meth:`InstanceFiles.batch` over its SFTP
connection (a file's bytes, a removal: no request of Incus's own for each). Pulls go over SFTP
(:mod:`sftp`): only there does Incus tell a FIFO, socket or device from a regular
file before opening it, and a file is read in chunks. What a pull writes on the
host goes through :mod:`cci_core.host_files`, never following a symlink that the
container may have made.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from cci_core.api import MAX_DEPTH, CciError, FileStatus, SafeDirectory, UsageError, open_directory, open_parent
from cci_builtin_plugins.incus.errors import APINotFound
from cci_builtin_plugins.incus.rest import IncusAPI, quote
from cci_builtin_plugins.incus.sftp import Attributes, SFTPError, SFTPRefused, SFTPSession

#: the most :meth:`InstanceFiles.pull_file` reads into memory (a copy to a host file has no limit)
MAX_READ = 64 << 20
#: directories below the root a push goes (deeper: an error); a pull skips those below :data:`MAX_DEPTH`
MAX_PUSH_DEPTH = 512
#: the hint when a pull meets something that is not copied
ONLY_FILES = "only regular files, directories and symlinks are copied"


class ExactLength:
    """The next ``size`` bytes of an open file, read in the pieces the request asks for (a streamed request body).

    A file that grows meanwhile is cut at ``size`` (the Content-Length sent); one that
    shrinks is an error, so a request never carries other than what it announced.
    :meth:`seek` back to the start lets a retried request send it again.
    """

    def __init__(self, source: BinaryIO, size: int) -> None:
        self._source, self._size, self._left = source, size, size
        self._start = source.tell()
        self.name = getattr(source, "name", "the file")

    def read(self, amount: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        wanted = self._left if amount is None or amount < 0 else min(amount, self._left)
        chunk = self._source.read(wanted)
        if not chunk:
            raise CciError(f"{self.name} changed while it was copied: it ended {self._left} bytes short of the "
                           f"{self._size} it had", hint="copy it again once nothing writes to it")
        self._left -= len(chunk)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise ValueError("only a rewind to the start is supported")
        self._source.seek(self._start)
        self._left = self._size
        return 0


class InstanceFiles:
    """The files of one instance."""

    def __init__(self, api: IncusAPI, instance: str) -> None:
        self.api = api
        self.instance = instance
        self._path = f"/1.0/instances/{quote(instance)}/files"
        #: the connection kept open within a :meth:`batch` (one per batch, not one per path: see there)
        self._kept: SFTPSession | None = None
        #: that connection while a thread opens it (from the batch's start: see :meth:`batch`)
        self._opening: _Opening | None = None
        self._batches = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Keep one SFTP connection for :meth:`status`, :meth:`pull_file`, :meth:`remove` and the :meth:`write` of a
        file's bytes until the block ends.

        The instance must run. The connection is opened at once on a thread: the first one to an instance makes
        Incus start its file server inside (about 30 ms), while the block goes on with other requests.
        """
        with self._lock:
            self._batches += 1
            if self._batches == 1:
                self._opening = _Opening(self._sftp)
        try:
            yield
        finally:
            with self._lock:
                self._batches -= 1
                if not self._batches:
                    kept, opening, self._kept, self._opening = self._kept, self._opening, None, None
                    if kept is not None:
                        kept.close()
                    if opening is not None:
                        opening.discard()

    def write(self, path: str, action: str, *, kind: str = "file", data: bytes | BinaryIO = b"", size: int = 0,
              mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        """Create or replace one file, directory or symlink (``data`` is a symlink's target).

        ``data`` may be an open regular file: its next ``size`` bytes are streamed
        (:class:`ExactLength`), never read whole.
        """
        if kind == "file" and isinstance(data, bytes) and self._batched():  # (no request of Incus's own each)
            with self._session() as session:
                session.write_file(path, data, mode=mode, uid=uid, gid=gid)
            return
        headers = {"X-Incus-type": kind, "X-Incus-uid": str(uid), "X-Incus-gid": str(gid),
                   "X-Incus-mode": f"{mode & 0o7777:04o}", "Content-Type": "application/octet-stream"}
        if kind == "file":
            headers["X-Incus-write"] = "overwrite"
        if not isinstance(data, bytes):
            data = ExactLength(data, size)
            headers["Content-Length"] = str(size)
        self.api.request("POST", self._path, action, params={"path": path}, data=data, headers=headers)

    def pull_file(self, path: str) -> bytes:
        """A regular file's content (symlinks followed inside the instance), at most :data:`MAX_READ` bytes."""
        with self._session() as session:
            handle, size = self._open_file(session, path)
            try:
                content = bytearray()
                for chunk in session.chunks(handle, path, size):
                    content += chunk
                    if len(content) > MAX_READ:
                        raise UsageError(f"{self.instance}:{path} has more than the {MAX_READ >> 20} MiB that cci "
                                       "reads into memory")
                return bytes(content)
            finally:
                session.close_handle(handle)

    def status(self, path: str) -> FileStatus | None:
        """What ``path`` itself is, over SFTP (its ``lstat``: a symlink is not followed); None when missing."""
        for attempt in (1, 2):
            with self._session() as session:
                try:
                    return _status(session, path)
                except SFTPRefused:
                    raise  # (about that path: the connection is fine)
                except SFTPError:  # a kept connection may have broken: once more on a new one
                    if attempt == 2 or session is not self._kept:
                        raise
                    self._kept = None
                    session.close()
        raise AssertionError("unreachable")

    def _batched(self) -> bool:
        with self._lock:
            return bool(self._batches)

    @contextlib.contextmanager
    def _session(self) -> Iterator[SFTPSession]:
        """The batch's connection (one user at a time), else a new one for the block."""
        with self._lock:
            if self._batches:
                if self._kept is None:
                    opening, self._opening = self._opening, None
                    self._kept = opening.result() if opening is not None else None
                    if self._kept is None:  # (its opening failed: opened here, its error raised here)
                        self._kept = self._sftp()
                yield self._kept
                return
        with self._sftp() as session:
            yield session

    def remove(self, path: str) -> None:
        """Remove the non-directory entry ``path`` (Incus unlinks it: a symlink itself); a missing one is no error."""
        if self._batched():
            with self._session() as session:
                session.remove(path)
            return
        try:
            self.api.request("DELETE", self._path, f"removing {path} in {self.instance}", params={"path": path})
        except APINotFound:
            pass

    def pull_file_to(self, path: str, destination: Path, *, untrusted: Sequence[Path] = ()) -> None:
        """Copy regular file ``path`` (symlinks followed inside the instance) to host file ``destination``,
        in chunks and keeping holes; missing parent directories are made (see :func:`open_parent`)."""
        with self._sftp() as session:
            handle, size = self._open_file(session, path)
            try:
                with open_parent(destination, untrusted=untrusted, create=True) as (into, name):
                    into.write(name, session.chunks(handle, path, size))
            finally:
                session.close_handle(handle)

    def push_tree(self, source: Path, path: str, *, uid: int, gid: int, untrusted: Sequence[Path] = ()) -> None:
        """Copy host directory ``source`` to ``path``, keeping modes and symlinks; merged into what exists.

        The host side is read through directory file descriptors: no symlink in the tree
        is followed (each is copied as a link), nor one in ``untrusted`` directories on
        the way to it; FIFOs, sockets and devices are never opened, and not copied.
        """
        action = f"copying {source} to {self.instance}:{path}"
        try:
            with open_directory(source, untrusted=untrusted) as directory:
                self._push_directory(directory, path, action, uid=uid, gid=gid)
        except OSError as exc:
            raise CciError(f"cannot read {exc.filename or source}: {exc.strerror}") from None

    def _push_directory(self, directory: SafeDirectory, path: str, action: str, *, uid: int, gid: int,
                        depth: int = 0) -> None:
        if depth > MAX_PUSH_DEPTH:  # each level holds a descriptor open, and a frame
            raise UsageError(f"{directory.path} is more than {MAX_PUSH_DEPTH} directories below the directory "
                             "copied", hint="copy a deeper part of the tree on its own")
        self.write(path, action, kind="directory", mode=stat.S_IMODE(os.fstat(directory.fd).st_mode), uid=uid, gid=gid)
        for name in directory.names():
            target, info = str(PurePosixPath(path, name)), directory.lstat(name)
            if info is None:
                continue  # removed since the listing
            if stat.S_ISLNK(info.st_mode):
                link = directory.readlink(name)
                if link is not None:
                    self.write(target, action, kind="symlink", data=os.fsencode(link), uid=uid, gid=gid)
            elif stat.S_ISDIR(info.st_mode):
                with directory.directory(name) as child:
                    self._push_directory(child, target, action, uid=uid, gid=gid, depth=depth + 1)
            elif stat.S_ISREG(info.st_mode):
                with directory.open_file(name) as handle:
                    status = os.fstat(handle.fileno())
                    self.write(target, action, data=handle, size=status.st_size, mode=stat.S_IMODE(status.st_mode),
                               uid=uid, gid=gid)

    def pull_tree(self, path: str, destination: Path, *, untrusted: Sequence[Path] = (),
                  on_skip: Callable[[str, str], None] | None = None) -> None:
        """Copy ``path`` (a directory, or a single file) to host path ``destination``.

        Regular files keep their mode bits, symlinks stay symlinks (a target inside the
        copied tree, given absolute, becomes relative); a directory that exists is
        merged into. Nothing else is opened: FIFOs, sockets and devices are skipped,
        each reported to ``on_skip`` (its path, what it is). No symlink is followed on
        the host at ``destination`` or below it, nor in ``untrusted`` directories
        (see :func:`cci_core.host_files.open_directory`).
        """
        root = str(PurePosixPath(path))
        with self._sftp() as session:
            attributes = session.lstat(root)
            if attributes.kind not in ("file", "directory", "symlink"):
                raise UsageError(f"{self.instance}:{root} is a {attributes.kind}", hint=ONLY_FILES)
            with open_parent(destination, untrusted=untrusted, create=True) as (into, name):
                _TreeCopy(self.instance, session, root, on_skip or _ignore).copy(root, attributes, into, name)

    def _sftp(self) -> SFTPSession:
        return SFTPSession(self.api, self.instance)

    def _open_file(self, session: SFTPSession, path: str) -> tuple[bytes, int]:
        """A read handle on regular file ``path`` and its size; anything else is refused before it is opened."""
        kind = session.stat(path).kind
        if kind == "directory":
            raise UsageError(f"{self.instance}:{path} is a directory", hint="copy a directory with -r")
        if kind != "file":
            raise UsageError(f"{self.instance}:{path} is a {kind}", hint=ONLY_FILES)
        handle = session.open(path)
        attributes = session.fstat(handle, path)  # it may have been swapped since the check
        if attributes.kind != "file":
            session.close_handle(handle)
            raise UsageError(f"{self.instance}:{path} is a {attributes.kind}", hint=ONLY_FILES)
        return handle, attributes.size


class _Opening:
    """An SFTP connection opened on a daemon thread from now: :meth:`result` is it, or None when opening failed
    (who needs it then opens one, and meets the error itself)."""

    def __init__(self, open_session: Callable[[], SFTPSession]) -> None:
        self._open = open_session
        self._session: SFTPSession | None = None
        self._discarded = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sftp-open", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            session = self._open()
        except Exception:  # noqa: BLE001 (see the class)
            return
        with self._lock:
            if self._discarded:
                session.close()
            else:
                self._session = session

    def result(self) -> SFTPSession | None:
        self._thread.join()
        return self._session

    def discard(self) -> None:
        """Not needed after all: closed now, or as soon as it is open (never waited for)."""
        with self._lock:
            self._discarded = True
            session, self._session = self._session, None
        if session is not None:
            session.close()


class _TreeCopy:
    """One recursive copy over one SFTP session."""

    def __init__(self, instance: str, session: SFTPSession, root: str, on_skip: Callable[[str, str], None]) -> None:
        self.instance, self.session, self.root, self.on_skip = instance, session, root, on_skip

    def copy(self, path: str, attributes: Attributes, into: SafeDirectory, name: str, depth: int = 0) -> None:
        """Copy ``path`` (whose ``lstat`` is ``attributes``, ``depth`` directories below the root) to entry
        ``name`` of ``into``; directories more than :data:`MAX_DEPTH` levels down are skipped (each holds a
        descriptor open while its entries are copied)."""
        kind = attributes.kind
        if kind == "directory" and depth > MAX_DEPTH:
            self.on_skip(path, f"directory more than {MAX_DEPTH} levels down, not copied with what it holds")
        elif kind == "directory":
            with into.directory(name, create=True, replace_link=True) as directory, \
                    contextlib.closing(self.session.listdir(path)) as listing:
                for child, child_attributes in listing:
                    self._copy_child(str(PurePosixPath(path, child)), child_attributes, directory, child, path,
                                     depth + 1)
        elif kind == "symlink":
            target = self.session.readlink(path)
            if target == self.root or target.startswith(self.root.rstrip("/") + "/"):
                target = os.path.relpath(target, str(PurePosixPath(path).parent))
            into.symlink(name, target)
        elif kind == "file":
            self._copy_file(path, into, name)
        else:
            self.on_skip(path, kind)

    def _copy_child(self, path: str, attributes: Attributes, into: SafeDirectory, name: str, parent: str,
                    depth: int) -> None:
        try:
            self.copy(path, attributes, into, name, depth)
        except APINotFound:
            # removed since the listing (a tool's temporary file): not copied. Unless the
            # directory, or the container, went away: reading it again raises then.
            self.session.lstat(parent)

    def _copy_file(self, path: str, into: SafeDirectory, name: str) -> None:
        session = self.session
        handle = session.open(path)
        try:
            attributes = session.fstat(handle, path)
            if attributes.kind != "file":  # swapped since the listing (a device opens at once): not read
                self.on_skip(path, attributes.kind)
                return
            into.write(name, session.chunks(handle, path, attributes.size), attributes.mode)
        finally:
            session.close_handle(handle)


def _status(session: SFTPSession, path: str) -> FileStatus | None:
    try:
        attributes = session.lstat(path)
    except APINotFound:
        return None
    return FileStatus(attributes.kind, attributes.size)


def _ignore(_path: str, _kind: str) -> None:
    pass

"""Reading a directory tree out of an Incus instance as entries (:meth:`Container.read_tree`).

A running instance streams it as one tar archive: ``find`` and GNU ``tar`` run
inside (as root), and the archive is parsed here while it arrives, so the tree
costs one exec instead of a request per file. ``find`` passes only regular
files (up to the size bound), directories and symlinks; ``tar`` stores
anything else swapped in meanwhile as a header, without opening it.

The instance is hostile, and so is what it sends (its ``tar`` may be anything):
this side accepts only regular files, directories and symlinks, refuses
sparse members and oversized headers, and bounds the bytes taken in, the
whole time and the time without data (:class:`~cci_core.driver.TreeLimits`).
Names and link targets are checked by whoever writes the entries
(:mod:`cci_core.tree_copy`).

A stopped instance (a session powered off), or one without ``find``/``tar``,
is walked over SFTP instead: listings carry each entry's type and size and are
read as they stream in, and only regular files are opened.

Either way, what cannot be read in the instance (a path over the kernel's length
limit, say) is passed as an :data:`~cci_core.driver.UNREADABLE` entry: what the
instance holds never makes the read fail, only its bounds do.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import queue
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from cci_core.api import UNREADABLE, NotFoundError, TreeEntry, TreeLimits, TreeReadError
from cci_builtin_plugins.incus.errors import APIError
from cci_builtin_plugins.incus.rest import IncusAPI

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.sftp import SFTPSession

#: run inside: exit 4 when the tree is missing, 5 when it is not a directory (a link...), 127 without the tools
SCRIPT = r"""
[ -L "$1" ] && exit 5
[ -d "$1" ] || { [ -e "$1" ] && exit 5; exit 4; }
cd -- "$1" || exit 4
command -v find >/dev/null 2>&1 && command -v tar >/dev/null 2>&1 || exit 127
find . \( -type f -size +"$2"c -fprintf /dev/stderr 'cci-oversize %s %P\n' \) \
    -o \( \( -type f -o -type d -o -type l \) -print0 \) | tar --null --no-recursion -T - -cf -
code=$?
cat >/dev/null
exit $code
"""
#: (the shell waits for the end of its input, which cci gives once it has read the whole archive: Incus passes
#: a command's output on for one second after the command has exited, then drops the rest, which cut the end off
#: an archive read more slowly than that)
#: exit codes of a tar that made a whole archive (1: a file changed while read; 2: one vanished or is unreadable)
_TAR_DONE = (0, 1, 2)
#: the largest extended (pax) or GNU long-name header accepted
MAX_HEADER = 64 * 1024
#: stderr kept from the archiver (the names of the files it left out for their size)
MAX_STDERR = 256 * 1024
_OVERSIZE = "cci-oversize "
_TAR, _CANNOT = "tar: ", ": Cannot "
_QUEUED = 256


@contextlib.contextmanager
def read_tree(api: IncusAPI, instance: str, path: str, limits: TreeLimits, *,
              running: bool) -> Iterator[Iterator[TreeEntry]]:
    """The entries of directory ``path`` in ``instance``: a tar stream when it runs, else an SFTP walk."""
    entries = _entries(api, instance, path, limits, running)
    with contextlib.closing(entries):
        yield entries


def _entries(api: IncusAPI, instance: str, path: str, limits: TreeLimits, running: bool) -> Iterator[TreeEntry]:
    deadline = time.monotonic() + limits.timeout
    if running:
        archive = _Archive(api, instance, path, limits, deadline)
        try:
            if (yield from archive.entries()):
                return
        finally:
            archive.close()
    yield from sftp_entries(api, instance, path, limits, deadline)


class _NoArchive(Exception):
    """The instance sent no archive at all (no tar inside, or it stopped): walk the tree instead."""


class _Archive:
    """``find | tar`` in the instance, its output queued as it arrives."""

    def __init__(self, api: IncusAPI, instance: str, path: str, limits: TreeLimits, deadline: float) -> None:
        self.api, self.instance, self.path, self.limits = api, instance, path, limits
        self.pipe = ChunkPipe(limits, deadline)
        self.stderr = bytearray()
        self.sockets: list[Any] = []
        self.started: Any = None
        self.stdin: Any = None

    def entries(self) -> Iterator[TreeEntry]:
        """The archive's entries; True once they are all passed, False if there was no archive to read."""
        try:
            self._start()
        except NotFoundError:
            raise
        except APIError:  # stopped meanwhile, or cannot run commands: walk instead
            return False
        try:
            yield from tar_entries(self.pipe, self.limits)
        except _NoArchive:
            self._end_input()
            code = self._exit_code()
            if code == 4:
                raise NotFoundError(f"{self.instance}:{self.path} does not exist") from None
            return code == 5  # not a directory: no entries; anything else: walk
        self._end_input()
        code = self._exit_code()
        if code not in _TAR_DONE:
            raise TreeReadError(f"reading {self.instance}:{self.path}: the archiver inside stopped "
                                f"(exit code {code})")
        yield from self._left_out()
        return True

    def _start(self) -> None:
        from cci_builtin_plugins.incus.execute import ExecStart, exec_body

        argv = ["sh", "-c", SCRIPT, "sh", self.path, str(self.limits.max_file)]
        body = exec_body(argv, user=0, group=0, environment={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                             "LC_ALL": "C"}, cwd=None, interactive=False)
        self.started = ExecStart(self.api, self.instance, body, f"reading {self.path} in {self.instance}")
        out = self.api.websocket(self.started.resource("1"), on_data=self.pipe.feed, on_close=self.pipe.end)
        self.sockets.append(out)
        threading.Thread(target=out.run, daemon=True, name="tree-stdout").start()
        err = self.api.websocket(self.started.resource("2"), on_data=self._keep_stderr)
        self.sockets.append(err)
        threading.Thread(target=err.run, daemon=True, name="tree-stderr").start()
        self.sockets.append(self.api.websocket(self.started.resource("control")))
        self.stdin = self.api.websocket(self.started.resource("0"))  # ended once the archive is read (SCRIPT)
        self.sockets.append(self.stdin)

    def _end_input(self) -> None:
        """The archiver's input ends: it exits now (see :data:`SCRIPT`)."""
        from cci_builtin_plugins.incus.websocket import close_quietly

        close_quietly(self.stdin, linger=True)

    def _keep_stderr(self, chunk: bytes) -> None:
        if len(self.stderr) < MAX_STDERR:
            self.stderr += chunk[:MAX_STDERR - len(self.stderr)]

    def _exit_code(self) -> int:
        """The archiver's exit code, waited for within the time left; -1 when it is unknown."""
        remaining = max(1, int(self.pipe.deadline - time.monotonic()))
        try:
            outcome = self.api.wait(self.started.operation, f"reading {self.path} in {self.instance}",
                                    timeout=min(remaining, self.limits.idle))
        except APIError:
            return -1
        try:
            return int((outcome.get("metadata") or {}).get("return", -1))
        except (TypeError, ValueError):
            return -1

    def _left_out(self) -> Iterator[TreeEntry]:
        """What the archive left out, for the warnings: the files ``find`` skipped for their size (as entries
        without content), and what ``tar`` could not read (``tar: NAME: Cannot stat: File name too long``)."""
        for line in bytes(self.stderr).decode(errors="surrogateescape").splitlines():
            size, _space, name = line[len(_OVERSIZE):].partition(" ")
            if line.startswith(_OVERSIZE) and size.isdigit() and name:
                yield TreeEntry(name, "file", 0o600, int(size))
            elif line.startswith(_TAR) and _CANNOT in line:
                yield TreeEntry(line[len(_TAR):].rpartition(_CANNOT)[0].removeprefix("./"), UNREADABLE)

    def close(self) -> None:
        from cci_builtin_plugins.incus.websocket import close_quietly

        self.pipe.abandon()
        for socket in self.sockets:
            close_quietly(socket)


class ChunkPipe:
    """Chunks handed over from a websocket thread, read as a file; reads are bounded in bytes and time."""

    def __init__(self, limits: TreeLimits, deadline: float) -> None:
        self.limits, self.deadline = limits, deadline
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED)
        self._buffer = memoryview(b"")
        self._eof = False
        self._abandoned = threading.Event()
        self.received = 0

    def feed(self, chunk: bytes | None) -> None:
        """Queue a chunk (None: the end), waiting while the queue is full, unless the reader gave up."""
        while not self._abandoned.is_set():
            try:
                self._queue.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue

    def end(self) -> None:
        self.feed(None)

    def abandon(self) -> None:
        """The reader is gone: drop whatever still comes."""
        self._abandoned.set()

    def read(self, size: int = -1) -> bytes:
        if not self._buffer:
            if self._eof:
                return b""
            chunk = self._next()
            if chunk is None:
                self._eof = True
                return b""
            self._buffer = memoryview(chunk)
        size = len(self._buffer) if size is None or size < 0 else size
        data = bytes(self._buffer[:size])
        self._buffer = self._buffer[size:]
        return data

    def _next(self) -> bytes | None:
        now = time.monotonic()
        if now >= self.deadline:
            raise TreeReadError(f"reading the tree took over {self.limits.timeout:.0f} s")
        try:
            chunk = self._queue.get(timeout=min(self.deadline - now, self.limits.idle))
        except queue.Empty:
            raise TreeReadError(f"no data from the container for {self.limits.idle:.0f} s" if
                                time.monotonic() < self.deadline else
                                f"reading the tree took over {self.limits.timeout:.0f} s") from None
        if chunk is not None:
            self.received += len(chunk)
            if self.received > self.limits.max_bytes:
                raise TreeReadError(f"the container sent over {self.limits.max_bytes >> 20} MiB")
        return chunk


# -- the archive ---------------------------------------------------------------------------------------------


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses what could make the parser take unbounded memory: sparse maps, huge
    extended headers, negative sizes."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size < 0:
            raise TreeReadError(f"a malformed archive from the container (negative size for {self.name!r})")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise TreeReadError("a sparse member in the archive from the container")
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                         tarfile.SOLARIS_XHDTYPE) and self.size > MAX_HEADER:
            raise TreeReadError(f"an extended header of {self.size} bytes in the archive from the container")
        return super()._proc_member(archive)  # type: ignore[misc]

    def _refuse_sparse(self, *_args: Any) -> None:
        raise TreeReadError("a sparse member in the archive from the container")

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


def tar_entries(stream: BinaryIO, limits: TreeLimits) -> Iterator[TreeEntry]:
    """The entries of a tar stream from the container, as they arrive; only files, directories and symlinks.

    Raises :class:`_NoArchive` when the stream holds no archive at all, and
    :class:`TreeReadError` when it breaks off or is malformed.
    """
    try:
        archive = tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo, bufsize=256 * 1024)
    except tarfile.ReadError as exc:
        raise _NoArchive(str(exc)) from None
    except tarfile.TarError as exc:
        raise TreeReadError(f"a malformed archive from the container: {exc}") from None
    with archive:
        while True:
            try:
                member = archive.next()
            except tarfile.TarError as exc:
                raise TreeReadError(f"a malformed archive from the container: {exc}") from None
            if member is None:
                return
            archive.members.clear()  # a stream's members are never looked at again: keep memory flat
            if member.isreg():
                if member.size > limits.max_file:
                    yield TreeEntry(member.name, "file", member.mode, member.size)
                    continue
                data = archive.extractfile(member)
                assert data is not None
                yield TreeEntry(member.name, "file", member.mode, member.size, data=_Guarded(data))
            elif member.isdir():
                yield TreeEntry(member.name, "directory", member.mode)
            elif member.issym():
                yield TreeEntry(member.name, "symlink", target=member.linkname)
            # hard links, devices, FIFOs and the rest: never passed on


class _Guarded:
    """A member's content, whose read errors (the stream broke off) are :class:`TreeReadError`."""

    def __init__(self, data: BinaryIO) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes:
        try:
            return self._data.read(size)
        except tarfile.TarError as exc:
            raise TreeReadError(f"the archive from the container broke off: {exc}") from None


# -- the walk over SFTP ----------------------------------------------------------------------------------------


def sftp_entries(api: IncusAPI, instance: str, path: str, limits: TreeLimits,
                 deadline: float) -> Iterator[TreeEntry]:
    """The tree walked over SFTP: listings streamed (with types and sizes); only regular files opened.

    What the container's file server refuses to read (a path over the kernel's length
    limit, a loop...) and directories over :data:`~cci_core.tree_copy.MAX_DEPTH` levels
    down are passed as :data:`~cci_core.driver.UNREADABLE` entries, never read: what the
    container holds cannot make the walk fail. Time and bytes are checked at every entry
    and chunk.
    """
    from cci_builtin_plugins.incus.sftp import SFTPError, SFTPNotFound, SFTPRefused, SFTPSession

    try:
        with SFTPSession(api, instance, timeout=limits.idle) as session:
            try:
                root = session.lstat(path)
            except SFTPNotFound:
                raise NotFoundError(f"{instance}:{path} does not exist") from None
            except SFTPRefused as exc:
                raise TreeReadError(f"{instance}:{path} cannot be read: {exc.detail}") from None
            if root.kind != "directory":
                return
            yield TreeEntry(".", "directory", root.mode & 0o7777)
            yield from _Walk(session, path, limits, deadline).entries()
    except SFTPError as exc:
        if exc.status == 504:  # no answer in time
            raise TreeReadError(str(exc)) from None
        raise


#: files opened (and small ones read) at once over SFTP: one round trip for each step of all of them
_BATCH = 64


class _Walk:
    """One walk over an SFTP session, within its limits."""

    def __init__(self, session: SFTPSession, path: str, limits: TreeLimits, deadline: float) -> None:
        self.session, self.path, self.limits, self.deadline = session, path, limits, deadline
        self.received = 0

    def entries(self) -> Iterator[TreeEntry]:
        """Everything below the root, depth first; a directory's entries as its listing streams in."""
        from cci_builtin_plugins.incus.sftp import SFTPNotFound, SFTPRefused

        pending = [""]
        while pending:
            relative = pending.pop()
            try:
                yield from self._directory(relative, pending)
            except SFTPNotFound:
                continue  # removed meanwhile
            except SFTPRefused:  # the listing itself cannot be read (what it gave so far is passed)
                yield TreeEntry(relative or ".", UNREADABLE)

    def _directory(self, relative: str, pending: list[str]) -> Iterator[TreeEntry]:
        from cci_builtin_plugins.incus.sftp import SFTPNotFound, SFTPRefused

        from cci_core.api import MAX_DEPTH

        depth = relative.count("/") + 2 if relative else 1  # of the entries listed
        files: list[tuple[str, str, int]] = []
        directory = posixpath.join(self.path, relative) if relative else self.path
        with contextlib.closing(self.session.listdir(directory)) as listing:
            for name, attributes in listing:
                self.check()
                inside = posixpath.join(relative, name) if relative else name
                full = posixpath.join(self.path, inside)
                mode = attributes.mode & 0o7777
                if attributes.kind == "directory" and depth >= MAX_DEPTH:
                    yield TreeEntry(inside, UNREADABLE)  # too deep: a copy would refuse what it holds
                elif attributes.kind == "directory":
                    yield TreeEntry(inside, "directory", mode)
                    pending.append(inside)
                elif attributes.kind == "symlink":
                    try:
                        target = self.session.readlink(full)
                    except SFTPNotFound:
                        continue
                    except SFTPRefused:
                        yield TreeEntry(inside, UNREADABLE)
                        continue
                    yield TreeEntry(inside, "symlink", target=target)
                elif attributes.kind == "file" and attributes.size > self.limits.max_file:
                    yield TreeEntry(inside, "file", mode, attributes.size)
                elif attributes.kind == "file":
                    files.append((inside, full, mode))
                    if len(files) == _BATCH:
                        yield from self._files(files)
                        files = []
        yield from self._files(files)

    def _files(self, files: list[tuple[str, str, int]]) -> Iterator[TreeEntry]:
        """Regular files (by their listing) read with their requests in flight together (one swapped for
        something else meanwhile is skipped, one the server refuses is passed as unreadable)."""
        from cci_builtin_plugins.incus.sftp import Refused

        if not files:
            return
        with self.session.open_files([full for _inside, full, _mode in files]) as opened:
            for (inside, full, mode), file in zip(files, opened):
                self.check()
                if file is None:
                    continue
                if isinstance(file, Refused):
                    yield TreeEntry(inside, UNREADABLE)
                elif file.content is not None:
                    self.take(len(file.content))
                    yield TreeEntry(inside, "file", mode, file.size, data=io.BytesIO(file.content))
                elif file.size > self.limits.max_file:
                    yield TreeEntry(inside, "file", mode, file.size)
                else:
                    chunks = self.session.chunks(file.handle, full, file.size)
                    yield TreeEntry(inside, "file", mode, file.size, data=_Chunks(chunks, self))

    def check(self) -> None:
        """Raise :class:`TreeReadError` once the walk's time is up."""
        if time.monotonic() > self.deadline:
            raise TreeReadError(f"reading the tree took over {self.limits.timeout:.0f} s")

    def take(self, size: int) -> None:
        """Count ``size`` bytes of content taken in; raise :class:`TreeReadError` over the limit, or late."""
        self.received += size
        if self.received > self.limits.max_bytes:
            raise TreeReadError(f"the container sent over {self.limits.max_bytes >> 20} MiB")
        self.check()


class _Chunks:
    """An iterator of a file's chunks read as a file; each chunk counted by the walk (bytes, time). A read the
    server refuses midway is :class:`TreeReadError`."""

    def __init__(self, chunks: Iterator[bytes], walk: _Walk) -> None:
        self._chunks, self._walk = chunks, walk
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        parts, length = [self._buffer], len(self._buffer)
        while size is None or size < 0 or length < size:
            chunk = self._next()
            if not chunk:
                break
            parts.append(chunk)
            length += len(chunk)
        data = b"".join(parts)
        if size is None or size < 0:
            size = len(data)
        data, self._buffer = data[:size], data[size:]
        return data

    def _next(self) -> bytes:
        from cci_builtin_plugins.incus.sftp import SFTPRefused

        try:
            chunk = next(self._chunks, b"")
        except SFTPRefused as exc:
            raise TreeReadError(f"a file of the container could not be read: {exc.detail}") from None
        self._walk.take(len(chunk))
        return chunk

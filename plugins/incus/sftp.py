"""A small SFTP (version 3) client on Incus's ``/1.0/instances/NAME/sftp`` endpoint.

The files API (GET ``.../files``) cannot tell a FIFO, a socket or a device from an
empty regular file (all are ``X-Incus-Type: file``, size 0), and it opens what it
reads: on a FIFO it waits for a writer forever. Over SFTP an ``lstat`` gives the
real file type, a directory listing comes with every entry's type in a few round
trips, an open file can be checked (``fstat``) before a byte is read, and a file
is read in chunks, never whole. Every answer has a deadline: a FIFO swapped in
between a check and an open makes the open fail in time instead of hanging.
"""

from __future__ import annotations

import contextlib
import socket
import stat
import struct
from collections.abc import Iterator, Sequence
from typing import BinaryIO, NamedTuple

from cci_builtin_plugins.incus.connection import Endpoint, quote
from cci_builtin_plugins.incus.errors import APIError, APINotFound
from cci_builtin_plugins.incus.http1 import Connection, ProtocolError
from cci_builtin_plugins.incus.rest import IncusAPI, Response, api_error, bad_answer

#: seconds an answer may take (Incus answers in milliseconds; a FIFO being opened never answers)
TIMEOUT = 30.0
#: bytes asked for per read (pkg/sftp's server answers at most 32 KiB a read)
CHUNK = 32 * 1024
#: reads kept in flight at once while a file is copied
WINDOW = 16

_INIT, _VERSION, _OPEN, _CLOSE, _READ, _WRITE, _LSTAT, _FSTAT, _FSETSTAT, _OPENDIR, _READDIR, _REMOVE = (
    1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13)
_STAT, _READLINK = 17, 19
_STATUS, _HANDLE, _DATA, _NAME, _ATTRS = 101, 102, 103, 104, 105
_OK, _EOF, _NO_SUCH_FILE = 0, 1, 2
_SIZE, _UIDGID, _PERMISSIONS, _ACMODTIME, _EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000
_READ_ONLY, _WRITE_NEW = 0x1, 0x2 | 0x8 | 0x10  # (write, create, truncate)


class Attributes(NamedTuple):
    """What SFTP tells of a file: ``mode`` holds the type bits (``stat.S_ISREG`` etc.) and the permissions."""

    mode: int
    size: int = 0
    uid: int = 0
    gid: int = 0

    @property
    def kind(self) -> str:
        """``file``, ``directory``, ``symlink``, or what else it is (``FIFO``, ``socket``, ``device``)."""
        return kind_of(self.mode)


def kind_of(mode: int) -> str:
    """The name of a file type, as cci's messages say it."""
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"),
                       (stat.S_ISBLK, "device")):
        if test(mode):
            return name
    return "file of unknown type"


class OpenFile(NamedTuple):
    """A regular file opened by :meth:`SFTPSession.open_files`: its handle, its size (by ``fstat``), and its whole
    content when that came in one read (else None: read it with :meth:`SFTPSession.chunks`)."""

    path: str
    handle: bytes
    size: int
    content: bytes | None


class SFTPError(APIError):
    """An SFTP request failed: refused, not answered in time, or the connection broke."""


class SFTPRefused(SFTPError):
    """The server answered a request about one path with a failure (too long a name, a loop, an I/O error...):
    that path cannot be read, the session goes on."""


class SFTPNotFound(SFTPRefused, APINotFound):
    """No such file."""


class Refused(NamedTuple):
    """A file of :meth:`SFTPSession.open_files` that the server refused to open or read (see :class:`SFTPRefused`)."""

    path: str
    reason: str


class SFTPSession:
    """One SFTP connection to an instance; use it as a context manager."""

    def __init__(self, api: IncusAPI, instance: str, *, timeout: float = TIMEOUT) -> None:
        self.instance = instance
        self._sock, self._reader = _upgrade(api, f"/1.0/instances/{quote(instance)}/sftp", timeout,
                                            f"opening the files of {instance}")
        self._next_id = 0
        self._unanswered: set[int] = set()  # requests whose answers are dropped when they come
        self._send(_INIT, struct.pack(">I", 3), with_id=False)
        kind, _payload = self._receive()
        if kind != _VERSION:
            raise SFTPError(f"opening the files of {instance}", 500, f"unexpected SFTP answer {kind}")

    def __enter__(self) -> SFTPSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection (the server ends its side)."""
        self._reader.close()
        self._sock.close()

    # -- requests ------------------------------------------------------------------------------

    def lstat(self, path: str) -> Attributes:
        """``path`` itself (a symlink is not followed)."""
        return _attributes(self._expect(_ATTRS, self._call(_LSTAT, _string(path)), path))

    def stat(self, path: str) -> Attributes:
        """``path``, symlinks followed (inside the instance)."""
        return _attributes(self._expect(_ATTRS, self._call(_STAT, _string(path)), path))

    def readlink(self, path: str) -> str:
        """A symlink's target as it was written."""
        payload = self._expect(_NAME, self._call(_READLINK, _string(path)), path)
        (name, _rest), = _names(payload)
        return name

    def listdir(self, path: str) -> Iterator[tuple[str, Attributes]]:
        """The entries of directory ``path`` (without ``.`` and ``..``), each with its attributes, as the server
        sends them: one answer's worth at a time, never the whole listing in memory. The directory's handle is
        closed when the iterator ends or is closed (use :func:`contextlib.closing` when it may not be exhausted).
        """
        handle = _handle(self._expect(_HANDLE, self._call(_OPENDIR, _string(path)), path))
        try:
            while True:
                kind, payload = self._call(_READDIR, _string(handle))
                if kind == _STATUS and _status(payload)[0] == _EOF:
                    return
                for name, attributes in _names(self._expect(_NAME, (kind, payload), path)):
                    if name not in (".", ".."):
                        yield name, attributes
        finally:
            self.close_handle(handle)

    def open(self, path: str) -> bytes:
        """A read handle on ``path`` (check it with :meth:`fstat` before reading: it may not be a file)."""
        return _handle(self._expect(_HANDLE, self._call(_OPEN, _string(path) + struct.pack(">II", _READ_ONLY, 0)),
                                    path))

    def fstat(self, handle: bytes, path: str) -> Attributes:
        """What an open handle is."""
        return _attributes(self._expect(_ATTRS, self._call(_FSTAT, _string(handle)), path))

    @contextlib.contextmanager
    def open_files(self, paths: Sequence[str]) -> Iterator[list[OpenFile | Refused | None]]:
        """``paths`` opened with their requests in flight together (one round trip for each step of all of them):
        the opens, an ``fstat`` of each, then one read of each file smaller than :data:`CHUNK`.

        Gives one item per path: None for one that is gone or is not a regular file
        (swapped meanwhile), :class:`Refused` for one the server would not open or
        read (a name too long, say); the handles are closed afterwards.
        """
        opens = {self._send(_OPEN, _string(path) + struct.pack(">II", _READ_ONLY, 0)): index
                 for index, path in enumerate(paths)}
        handles: dict[int, bytes] = {}
        refused: dict[int, Refused] = {}

        def answered(kind: int, answer: tuple[int, bytes], index: int) -> bytes | None:
            try:
                return self._expect(kind, answer, paths[index])
            except SFTPNotFound:  # removed meanwhile
                return None
            except SFTPRefused as exc:
                refused[index] = Refused(paths[index], exc.detail)
                return None

        try:
            for request, answer in self._collect(set(opens)).items():
                if (payload := answered(_HANDLE, answer, opens[request])) is not None:
                    handles[opens[request]] = _handle(payload)
            stats = {self._send(_FSTAT, _string(handle)): index for index, handle in handles.items()}
            sizes: dict[int, int] = {}
            for request, answer in self._collect(set(stats)).items():
                if (payload := answered(_ATTRS, answer, stats[request])) is not None:
                    attributes = _attributes(payload)
                    if attributes.kind == "file":
                        sizes[stats[request]] = attributes.size
            reads = {self._send(_READ, _string(handles[index]) + struct.pack(">QI", 0, CHUNK)): index
                     for index, size in sizes.items() if size < CHUNK}
            contents: dict[int, bytes] = {}
            for request, answer in self._collect(set(reads)).items():
                index = reads[request]
                try:
                    data = self._data(answer, paths[index])
                except SFTPRefused as exc:
                    refused[index] = Refused(paths[index], exc.detail)
                    del sizes[index]
                    continue
                if len(data) < CHUNK:
                    contents[index] = data
                else:  # grew meanwhile
                    sizes[index] = len(data)
            yield [OpenFile(path, handles[index], len(contents[index]) if index in contents else sizes[index],
                            contents.get(index)) if index in sizes else refused.get(index)
                   for index, path in enumerate(paths)]
        finally:
            for handle in handles.values():
                self.close_handle(handle)

    def chunks(self, handle: bytes, path: str, size: int) -> Iterator[bytes]:
        """The content of an open regular file of ``size`` bytes (as :meth:`fstat` said), chunk by chunk.

        A few reads are kept in flight; the file ends at the first short read (or at its end, if it grew).
        """
        offset = 0
        while True:
            count = min(WINDOW, max(size - offset, 0) // CHUNK + 1)
            requests = [(self._send(_READ, _string(handle) + struct.pack(">QI", offset + index * CHUNK, CHUNK)),
                         offset + index * CHUNK) for index in range(count)]
            answers = self._collect({request for request, _at in requests})
            for request, at in requests:
                data = self._data(answers[request], path)
                if data:
                    yield data
                offset = at + len(data)
                if len(data) < CHUNK:
                    return

    def write_file(self, path: str, data: bytes, *, mode: int, uid: int, gid: int) -> None:
        """Make ``path`` a file of ``data`` (an existing one emptied first: links followed, as the files API does),
        owned by ``uid``/``gid`` with ``mode`` before a byte is in it."""
        handle = _handle(self._expect(_HANDLE, self._call(_OPEN, _string(path) + struct.pack(">II", _WRITE_NEW, 0)),
                                      path, writing=True))
        try:
            self._all_ok({self._send(_FSETSTAT, _string(handle) + attributes)
                          for attributes in _owner_and_mode(uid, gid, mode)}, path)
            offsets = range(0, len(data), CHUNK)
            for first in range(0, len(offsets), WINDOW):  # (a few writes in flight at once)
                self._all_ok({self._send(_WRITE, _string(handle) + struct.pack(">Q", at) + _string(data[at:at + CHUNK]))
                              for at in offsets[first:first + WINDOW]}, path)
        finally:
            closed = self._call(_CLOSE, _string(handle))
        self._ok(closed, path)  # (the last of the data is in once its close is answered)

    def remove(self, path: str) -> None:
        """Remove the entry ``path`` that is not a directory (a link itself); a missing one is no error."""
        try:
            self._ok(self._call(_REMOVE, _string(path)), path)
        except SFTPNotFound:
            pass

    def close_handle(self, handle: bytes) -> None:
        """Close an open file or directory handle (its answer is not waited for: it comes with the next one)."""
        self._unanswered.add(self._send(_CLOSE, _string(handle)))

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        request = self._send(kind, payload)
        return self._collect({request})[request]

    def _collect(self, requests: set[int]) -> dict[int, tuple[int, bytes]]:
        """The answers to ``requests`` (sent already), by request id, in whatever order they come."""
        answers: dict[int, tuple[int, bytes]] = {}
        while len(answers) < len(requests):
            kind, body = self._receive()
            request = struct.unpack(">I", body[:4])[0] if len(body) >= 4 else 0
            if request in self._unanswered:
                self._unanswered.discard(request)
                continue
            if request not in requests:
                raise SFTPError(self._action(""), 500, f"an SFTP answer to no request ({request})")
            answers[request] = (kind, body[4:])
        return answers

    def _send(self, kind: int, payload: bytes, *, with_id: bool = True) -> int:
        self._next_id += 1
        body = bytes([kind]) + (struct.pack(">I", self._next_id) if with_id else b"") + payload
        try:
            self._sock.sendall(struct.pack(">I", len(body)) + body)
        except OSError as exc:
            raise self._broken(exc) from None
        return self._next_id

    def _receive(self) -> tuple[int, bytes]:
        try:
            header = self._reader.read(4)
            length = struct.unpack(">I", header)[0] if len(header) == 4 else 0
            body = self._reader.read(length) if length else b""
        except OSError as exc:
            raise self._broken(exc) from None
        if not length or len(body) != length:
            raise SFTPError(self._action(""), 500, "Incus closed the SFTP connection")
        return body[0], body[1:]

    def _broken(self, exc: OSError) -> SFTPError:
        if isinstance(exc, socket.timeout):
            return SFTPError(self._action(""), 504, "no answer in time (a FIFO swapped in, or Incus is stuck)")
        return SFTPError(self._action(""), 500, f"the SFTP connection broke: {exc}")

    def _expect(self, kind: int, answer: tuple[int, bytes], path: str, *, writing: bool = False) -> bytes:
        got, payload = answer
        if got == kind:
            return payload
        if got == _STATUS:
            raise self._failure(*_status(payload), path, writing)
        raise SFTPError(self._action(path, writing), 500, f"unexpected SFTP answer {got}")

    def _ok(self, answer: tuple[int, bytes], path: str) -> None:
        """A request that changes ``path`` succeeded (else its error raises)."""
        got, payload = answer
        if got != _STATUS:
            raise SFTPError(self._action(path, True), 500, f"unexpected SFTP answer {got}")
        code, message = _status(payload)
        if code != _OK:
            raise self._failure(code, message, path, True)

    def _all_ok(self, requests: set[int], path: str) -> None:
        for answer in self._collect(requests).values():
            self._ok(answer, path)

    def _failure(self, code: int, message: str, path: str, writing: bool) -> SFTPRefused:
        error = SFTPNotFound if code == _NO_SUCH_FILE else SFTPRefused
        return error(self._action(path, writing), 404 if code == _NO_SUCH_FILE else 500,
                     message or f"SFTP status {code}")

    def _data(self, answer: tuple[int, bytes], path: str) -> bytes:
        """What a read answered (nothing at the end of the file)."""
        kind, payload = answer
        if kind == _STATUS and _status(payload)[0] == _EOF:
            return b""
        return _string_at(self._expect(_DATA, answer, path), 0)[0]

    def _action(self, path: str, writing: bool = False) -> str:
        if not path:
            return f"reading the files of {self.instance}"
        return f"{'writing' if writing else 'reading'} {path} in {self.instance}"


def _string(value: str | bytes) -> bytes:
    data = value.encode(errors="surrogateescape") if isinstance(value, str) else value
    return struct.pack(">I", len(data)) + data


def _owner_and_mode(uid: int, gid: int, mode: int) -> tuple[bytes, bytes]:
    """SFTP attributes that set the owner, then the permission bits: two requests (Incus's server, pkg/sftp, reads
    the two together in another order than the protocol's, seen with Incus 6.0.4)."""
    return struct.pack(">III", _UIDGID, uid, gid), struct.pack(">II", _PERMISSIONS, mode & 0o7777)


def _string_at(payload: bytes, offset: int) -> tuple[bytes, int]:
    """The SFTP string at ``offset`` and the offset after it."""
    (length,) = struct.unpack_from(">I", payload, offset)
    end = offset + 4 + length
    if end > len(payload):
        raise ValueError("a truncated SFTP packet")
    return payload[offset + 4:end], end


def _handle(payload: bytes) -> bytes:
    return _string_at(payload, 0)[0]


def _status(payload: bytes) -> tuple[int, str]:
    (code,) = struct.unpack_from(">I", payload, 0)
    try:
        message = _string_at(payload, 4)[0].decode(errors="replace")
    except (ValueError, struct.error):
        message = ""
    return code, message


def _attributes_at(payload: bytes, offset: int) -> tuple[Attributes, int]:
    (flags,) = struct.unpack_from(">I", payload, offset)
    offset += 4
    size = uid = gid = mode = 0
    if flags & _SIZE:
        (size,) = struct.unpack_from(">Q", payload, offset)
        offset += 8
    if flags & _UIDGID:
        uid, gid = struct.unpack_from(">II", payload, offset)
        offset += 8
    if flags & _PERMISSIONS:
        (mode,) = struct.unpack_from(">I", payload, offset)
        offset += 4
    if flags & _ACMODTIME:
        offset += 8
    if flags & _EXTENDED:
        (count,) = struct.unpack_from(">I", payload, offset)
        offset += 4
        for _pair in range(2 * count):
            offset = _string_at(payload, offset)[1]
    return Attributes(mode, size, uid, gid), offset


def _attributes(payload: bytes) -> Attributes:
    return _attributes_at(payload, 0)[0]


def _names(payload: bytes) -> list[tuple[str, Attributes]]:
    """The entries of a NAME answer: file name (surrogate-escaped), long name (skipped), attributes."""
    (count,) = struct.unpack_from(">I", payload, 0)
    offset, entries = 4, []
    for _entry in range(count):
        name, offset = _string_at(payload, offset)
        offset = _string_at(payload, offset)[1]
        attributes, offset = _attributes_at(payload, offset)
        entries.append((name.decode(errors="surrogateescape"), attributes))
    return entries


def _upgrade(api: IncusAPI, path: str, timeout: float, action: str) -> tuple[socket.socket, BinaryIO]:
    """A socket on which Incus switched ``path`` to SFTP (HTTP 101); an error answer raises as in :mod:`rest`."""
    endpoint: Endpoint = api.endpoint
    connection = Connection(lambda: endpoint.open(timeout), endpoint.host)
    try:
        answer = connection.request("GET", api.url(path), headers={"Upgrade": "sftp", "Connection": "Upgrade"})
    except OSError as exc:
        connection.close()
        raise endpoint.connection_error(exc) from exc
    except ProtocolError as exc:
        connection.close()
        raise bad_answer(endpoint, exc) from exc
    except BaseException:
        connection.close()
        raise
    if answer.status != 101:
        connection.close()
        raise api_error(action, Response(*answer))
    return connection.detach()  # the reader may hold bytes read past the headers

"""The SFTP client against a scripted server on a unix socket (the real Incus: tests/integration/test_file_cmd.py)."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cci_core.driver import UNREADABLE, TreeLimits, TreeReadError
from cci_core.errors import NotFoundError
from cci_builtin_plugins.incus.connection import Endpoint
from cci_builtin_plugins.incus.rest import IncusAPI
from cci_builtin_plugins.incus.sftp import CHUNK, SFTPError, SFTPSession
from cci_builtin_plugins.incus.tree_reader import sftp_entries

CONTENT = os.urandom(5 * CHUNK + 7)
#: path -> (mode, content or link target or directory entries)
FILES: dict[str, tuple[int, object]] = {
    "/d": (stat.S_IFDIR | 0o755, ["f", "fifo", "link"]),
    "/d/f": (stat.S_IFREG | 0o640, CONTENT),
    "/d/fifo": (stat.S_IFIFO | 0o644, b""),
    "/d/link": (stat.S_IFLNK | 0o777, "f"),
}


def _string(data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return struct.pack(">I", len(data)) + data


def _attrs(path: str) -> bytes:
    mode, content = FILES[path]
    size = len(content) if isinstance(content, bytes) else 0
    return struct.pack(">IQIII", 0x1 | 0x2 | 0x4, size, 0, 0, mode)


#: paths the server refuses with a failure status, as pkg/sftp does for a path over the kernel's PATH_MAX
REFUSED = {"/t/long", "/t/longfile", "/t/longlink"}
#: a directory listed a hundred names per READDIR answer, each answer after a pause
BIG, BATCH, PAUSE = "/big", 100, 0.05


class Server:
    """Answers one HTTP upgrade and then SFTP requests; an OPEN of ``/slow`` is never answered, requests about
    :data:`REFUSED` paths fail, and :data:`BIG` is listed slowly."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.listed: set[str] = set()  # directory handles read to their end
        #: what the client wrote: path -> content; and each change in order: (kind, path, attributes or offset)
        self.written: dict[str, bytearray] = {}
        self.changes: list[tuple[int, str, bytes]] = []
        self.served: dict[str, int] = {}  # READDIR answers sent, by directory
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _address = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(connection,), daemon=True).start()

    def handle(self, connection: socket.socket) -> None:
        try:
            self._serve(connection)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client dropped the connection (what some tests check it does)

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        request = reader.readline().decode()
        while reader.readline() not in (b"\r\n", b""):
            pass
        if "/instances/gone/" in request:
            body = json.dumps({"error": "Instance not found"}).encode()
            connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            return
        connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: sftp\r\nConnection: Upgrade\r\n\r\n")
        while header := reader.read(4):
            packet = reader.read(struct.unpack(">I", header)[0])
            kind = packet[0]
            if kind == 1:
                self.send(connection, 2, struct.pack(">I", 3))
                continue
            request_id, payload = packet[1:5], packet[5:]
            answer = self.answer(kind, payload)
            if answer is not None:
                self.send(connection, answer[0], request_id + answer[1])

    def answer(self, kind: int, payload: bytes) -> tuple[int, bytes] | None:
        (length,) = struct.unpack_from(">I", payload)
        argument = payload[4:4 + length].decode().rstrip("/") or "/"
        if kind in (3, 11) and argument == "/slow":  # an OPEN that waits for a FIFO's writer
            return None
        if argument.startswith("/w/") or argument == "/w":  # a directory the client writes into
            return self.change(kind, argument, payload[4 + length:])
        if kind in (8, 12, 5, 4):  # FSTAT, READDIR, READ, CLOSE take a handle: the path itself here
            path = argument
            if kind == 4:
                return 101, struct.pack(">I", 0) + _string("") + _string("")
            if kind == 8:
                return 105, _attrs(path)
            if kind == 12 and path == BIG:
                time.sleep(PAUSE)
                start = self.served.get(path, 0) * BATCH
                self.served[path] = self.served.get(path, 0) + 1
                names = FILES[path][1][start:start + BATCH]  # type: ignore[index]
                if not names:
                    return 101, struct.pack(">I", 1) + _string("EOF") + _string("")
                return 104, struct.pack(">I", len(names)) + b"".join(
                    _string(name) + _string("") + struct.pack(">II", 0x4, stat.S_IFIFO | 0o644) for name in names)
            if kind == 12:
                if path in self.listed:
                    return 101, struct.pack(">I", 1) + _string("EOF") + _string("")
                self.listed.add(path)
                names = [".", *FILES[path][1]]  # type: ignore[misc]
                return 104, struct.pack(">I", len(names)) + b"".join(
                    _string(name) + _string("long name") + (_attrs(f"{path}/{name}") if name != "." else _attrs(path))
                    for name in names)
            offset, size = struct.unpack_from(">QI", payload, 4 + length)
            data = FILES[path][1][offset:offset + size]  # type: ignore[index]
            return (103, _string(data)) if data else (101, struct.pack(">I", 1) + _string("EOF") + _string(""))
        if argument in REFUSED:
            return 101, struct.pack(">I", 4) + _string(f"lstat {argument}: file name too long") + _string("")
        if argument not in FILES:
            return 101, struct.pack(">I", 2) + _string("no such file") + _string("")
        if kind in (7, 17):
            return 105, _attrs(argument)
        if kind == 19:
            return 104, struct.pack(">I", 1) + _string(FILES[argument][1]) + _string("") + struct.pack(">I", 0)
        return 102, _string(argument)  # OPEN, OPENDIR: the handle is the path

    def change(self, kind: int, path: str, rest: bytes) -> tuple[int, bytes]:
        """OPEN (to write), FSETSTAT, WRITE, CLOSE and REMOVE under ``/w``: ``/w/refused`` cannot be opened."""
        ok = (101, struct.pack(">I", 0) + _string("") + _string(""))
        self.changes.append((kind, path, rest))
        if kind == 3:
            if path == "/w/refused":
                return 101, struct.pack(">I", 3) + _string("permission denied") + _string("")
            self.written[path] = bytearray()
            return 102, _string(path)
        if kind == 6:
            (offset,) = struct.unpack_from(">Q", rest)
            data = rest[12:]
            self.written[path][offset:offset + len(data)] = data
        if kind == 13 and self.written.pop(path, None) is None:
            return 101, struct.pack(">I", 2) + _string("no such file") + _string("")
        return ok

    def send(self, connection: socket.socket, kind: int, body: bytes) -> None:
        try:
            connection.sendall(struct.pack(">I", len(body) + 1) + bytes([kind]) + body)
        except OSError:  # the client went away (a walk stopped at its deadline)
            connection.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[IncusAPI]:
    server = Server(tmp_path / "incus.socket")
    api = IncusAPI(Endpoint(socket=tmp_path / "incus.socket"))
    api.server = server  # type: ignore[attr-defined]
    yield api
    server.listener.close()


def test_types_listings_links_and_chunked_reads(api: IncusAPI) -> None:
    with SFTPSession(api, "c1", timeout=5) as session:
        assert [session.lstat(path).kind for path in FILES] == ["directory", "file", "FIFO", "symlink"]
        assert session.readlink("/d/link") == "f"
        assert [(name, found.kind) for name, found in session.listdir("/d")] == [
            ("f", "file"), ("fifo", "FIFO"), ("link", "symlink")]
        handle = session.open("/d/f")
        found = session.fstat(handle, "/d/f")
        assert (found.kind, found.size, found.mode & 0o777) == ("file", len(CONTENT), 0o640)
        chunks = list(session.chunks(handle, "/d/f", found.size))
        assert b"".join(chunks) == CONTENT and max(map(len, chunks)) == CHUNK
        session.close_handle(handle)
        with pytest.raises(NotFoundError, match="reading /nope in c1: no such file"):
            session.lstat("/nope")


def test_an_open_that_never_answers_fails_in_time(api: IncusAPI) -> None:
    with SFTPSession(api, "c1", timeout=0.5) as session:
        started = time.monotonic()
        with pytest.raises(SFTPError, match="no answer in time"):
            session.open("/slow")
        assert time.monotonic() - started < 3


def test_a_missing_instance_is_not_found(api: IncusAPI) -> None:
    with pytest.raises(NotFoundError, match="opening the files of gone: Instance not found"):
        SFTPSession(api, "gone")


def test_files_opened_together_leave_out_what_is_gone_or_not_a_regular_file(
        api: IncusAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FILES, "/small", (stat.S_IFREG | 0o600, b"tiny"))
    with SFTPSession(api, "c1", timeout=5) as session:
        with session.open_files(["/d/f", "/d/fifo", "/d/link", "/nope", "/small"]) as opened:
            large, fifo, link, gone, small = opened
            assert (fifo, link, gone) == (None, None, None)
            assert small is not None and (small.path, small.size, small.content) == ("/small", 4, b"tiny")
            assert large is not None and (large.size, large.content) == (len(CONTENT), None)
            assert b"".join(session.chunks(large.handle, large.path, large.size)) == CONTENT
        assert session.lstat("/small").size == 4  # the closes' answers were dropped: the session goes on


LIMITS = TreeLimits(max_file=1 << 20, max_bytes=1 << 30, timeout=0.3, idle=5)


def test_a_save_walk_passes_what_the_server_refuses_as_unreadable_and_goes_on(
        api: IncusAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FILES, "/t", (stat.S_IFDIR | 0o755, ["long", "longfile", "longlink", "ok", "sub"]))
    monkeypatch.setitem(FILES, "/t/long", (stat.S_IFDIR | 0o755, []))
    monkeypatch.setitem(FILES, "/t/longfile", (stat.S_IFREG | 0o644, b"x"))
    monkeypatch.setitem(FILES, "/t/longlink", (stat.S_IFLNK | 0o777, "ok"))
    monkeypatch.setitem(FILES, "/t/ok", (stat.S_IFREG | 0o644, b"kept"))
    monkeypatch.setitem(FILES, "/t/sub", (stat.S_IFDIR | 0o755, ["f"]))
    monkeypatch.setitem(FILES, "/t/sub/f", (stat.S_IFREG | 0o600, b"too"))
    entries = {entry.path: (entry.kind, entry.data.read() if entry.data else None)
               for entry in sftp_entries(api, "c1", "/t", LIMITS._replace(timeout=30), time.monotonic() + 30)}
    assert entries == {".": ("directory", None), "long": (UNREADABLE, None), "longfile": (UNREADABLE, None),
                       "longlink": (UNREADABLE, None), "ok": ("file", b"kept"), "sub": ("directory", None),
                       "sub/f": ("file", b"too")}


def test_a_huge_listing_is_streamed_and_stops_at_the_deadline(api: IncusAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FILES, BIG, (stat.S_IFDIR | 0o755, [f"f{index:05}" for index in range(100 * BATCH)]))
    server: Server = api.server  # type: ignore[attr-defined]
    started = time.monotonic()
    walk = sftp_entries(api, "c1", BIG, LIMITS, started + LIMITS.timeout)
    assert next(walk).path == "."
    with pytest.raises(TreeReadError, match="took over"):
        for _entry in walk:
            assert server.served[BIG] < 100, "the whole listing was read before anything came"
    assert time.monotonic() - started < 3 and server.served[BIG] < 100


def test_a_file_is_written_owner_and_mode_first_in_chunks_and_its_close_waited_for(api: IncusAPI) -> None:
    server: Server = api.server  # type: ignore[attr-defined]
    data = os.urandom(3 * CHUNK + 5)
    with SFTPSession(api, "c1", timeout=5) as session:
        session.write_file("/w/f", data, mode=0o100640, uid=1000, gid=1001)
        session.remove("/w/missing")  # nothing there: no error
        with pytest.raises(SFTPError, match="writing /w/refused in c1.*permission denied"):
            session.write_file("/w/refused", b"x", mode=0o600, uid=0, gid=0)
    assert bytes(server.written["/w/f"]) == data
    kinds = [kind for kind, path, _ in server.changes if path == "/w/f"]
    assert kinds == [3, 10, 10, 6, 6, 6, 6, 4]  # open, owner, mode, the writes, the close
    attributes = [rest for kind, path, rest in server.changes if kind == 10]
    assert attributes == [struct.pack(">III", 0x2, 1000, 1001), struct.pack(">II", 0x4, 0o640)]


def test_a_removal_unlinks_the_entry(api: IncusAPI) -> None:
    server: Server = api.server  # type: ignore[attr-defined]
    with SFTPSession(api, "c1", timeout=5) as session:
        session.write_file("/w/f", b"x", mode=0o600, uid=0, gid=0)
        session.remove("/w/f")
    assert "/w/f" not in server.written and [kind for kind, _, _ in server.changes][-1] == 13

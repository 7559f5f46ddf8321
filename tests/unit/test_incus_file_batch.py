"""A file batch's one SFTP connection: opened on a thread as the batch starts, shared by statuses and reads, closed
at its end, and replaced once when it broke."""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator

import pytest

from cci_builtin_plugins.incus.errors import APIError, APINotFound
from cci_builtin_plugins.incus.files import InstanceFiles
from cci_builtin_plugins.incus.sftp import Attributes, SFTPError, SFTPRefused

FILES = {"/home/code": None, "/home/code/a": b"settings"}


class Session:
    """One fake SFTP connection: ``/home/code`` is a directory, ``/home/code/a`` a file."""

    def __init__(self, number: int, broken: bool = False) -> None:
        self.number, self.broken, self.closed, self.calls = number, broken, False, 0
        self.changes: list[tuple[object, ...]] = []

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def lstat(self, path: str) -> Attributes:
        assert not self.closed, "used after its close"
        self.calls += 1
        if self.broken:
            raise SFTPError("reading", 500, "connection broken")
        if path == "/loop":
            raise SFTPRefused("reading", 500, "too many levels of symbolic links")
        if path not in FILES:
            raise APINotFound("reading", 404, "not found")
        content = FILES[path]
        return Attributes(stat.S_IFDIR | 0o700) if content is None else Attributes(stat.S_IFREG | 0o600, len(content))

    stat = lstat

    def open(self, path: str) -> bytes:
        return path.encode()

    def fstat(self, handle: bytes, path: str) -> Attributes:
        return self.lstat(path)

    def chunks(self, handle: bytes, path: str, size: int) -> Iterator[bytes]:
        content = FILES[path]
        assert content is not None
        yield content

    def close_handle(self, handle: bytes) -> None:
        pass

    def write_file(self, path: str, data: bytes, *, mode: int, uid: int, gid: int) -> None:
        self.calls += 1
        self.changes.append(("write", path, data, mode, uid, gid))

    def remove(self, path: str) -> None:
        self.calls += 1
        self.changes.append(("remove", path))


class Files(InstanceFiles):
    """Instance files whose connections are :class:`Session` objects; ``failures`` openings fail first, and
    ``gate`` (when set) holds each opening until it is set."""

    def __init__(self, *, failures: int = 0, broken: int = 0, gate: threading.Event | None = None) -> None:
        super().__init__(None, "c1")  # type: ignore[arg-type]
        self.sessions: list[Session] = []
        self.threads: list[str] = []
        self.failures, self.broken, self.gate = failures, broken, gate

    def _sftp(self) -> Session:  # type: ignore[override]
        self.threads.append(threading.current_thread().name)
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise APIError("opening the files of c1", 400, "Instance is not running")
        session = Session(len(self.sessions), broken=len(self.sessions) < self.broken)
        self.sessions.append(session)
        return session


def test_outside_a_batch_each_call_has_a_connection_of_its_own_closed_after_it() -> None:
    files = Files()
    assert files.status("/home/code/a") is not None
    assert files.pull_file("/home/code/a") == b"settings"
    assert [session.closed for session in files.sessions] == [True, True]


def test_a_batch_opens_one_connection_on_a_thread_at_its_start_for_statuses_and_reads_and_closes_it() -> None:
    files = Files()
    with files.batch():
        with files.batch():  # (nested: the same one)
            assert files.status("/home/code") is not None
            assert files.status("/home/code/missing") is None
        assert files.pull_file("/home/code/a") == b"settings"
        assert [session.closed for session in files.sessions] == [False]
    assert files.threads == ["sftp-open"]
    assert files.sessions[0].calls == 4 and files.sessions[0].closed


def test_a_batch_that_ends_before_its_connection_is_open_closes_it_once_open() -> None:
    gate = threading.Event()
    files = Files(gate=gate)
    with files.batch():
        pass  # nothing needed it: the batch does not wait for it
    gate.set()
    for _ in range(1000):
        if files.sessions and files.sessions[0].closed:
            break
        threading.Event().wait(0.01)
    assert [session.closed for session in files.sessions] == [True]


def test_an_opening_that_failed_is_tried_again_where_needed_and_its_error_raised_there() -> None:
    files = Files(failures=2)
    with files.batch(), pytest.raises(APIError, match="not running"):
        files.status("/home/code")
    files = Files(failures=1)
    with files.batch():
        assert files.status("/home/code/a") is not None
    assert files.threads == ["sftp-open", "MainThread"] and files.sessions[0].closed


def test_a_broken_kept_connection_is_replaced_once_and_a_refused_path_is_not_retried() -> None:
    files = Files(broken=1)
    with files.batch():
        assert files.status("/home/code/a") is not None
        with pytest.raises(SFTPRefused):
            files.status("/loop")
    assert [session.calls for session in files.sessions] == [1, 2] and all(s.closed for s in files.sessions)
    files = Files(broken=2)
    with files.batch(), pytest.raises(SFTPError, match="broken"):
        files.status("/home/code/a")
    assert len(files.sessions) == 2 and all(s.closed for s in files.sessions)


def test_in_a_batch_a_files_bytes_and_a_removal_go_over_its_connection() -> None:
    files = Files()
    with files.batch():
        files.remove("/home/code/a")
        files.write("/home/code/a", "writing", data=b"new", mode=0o600, uid=1000, gid=1000)
    assert files.sessions[0].changes == [("remove", "/home/code/a"),
                                         ("write", "/home/code/a", b"new", 0o600, 1000, 1000)]

"""A command's standard input over the exec's input socket (cci run, cci container exec), against a fake Incus: sent
as read, then closed (the end of file); signals over the control socket; an exec Incus lost track of at once is made
again only while none of its output came and none of its input was read, or its input can be read again from
where it began (a seekable one)."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from cci_builtin_plugins.incus.errors import APIError
from cci_builtin_plugins.incus.execute import INPUT_CHUNK, start_command

NOT_READY = "Failed to retrieve PID of executing child process"


class Socket:
    """A websocket: what is sent on it, whether it was closed; an output socket may deliver ``output``."""

    def __init__(self, resource: str, on_data: Any = None, on_close: Any = None, output: bytes = b"") -> None:
        self.resource, self.on_data, self.on_close, self.output = resource, on_data, on_close, output
        self.sent: list[Any] = []
        self.closed = threading.Event()

    def run(self) -> None:
        if self.output and self.on_data:
            self.on_data(self.output)
        if self.on_close:
            self.on_close()

    def send(self, payload: Any, binary: bool = False) -> None:
        if self.closed.is_set():
            raise OSError("closed")
        self.sent.append(payload)

    def close(self, *, linger: bool = False) -> None:
        self.closed.set()


class API:
    """Exec operations: the first ``failures`` fail as not ready (after ``output`` came, if any), then one ends
    with ``code`` once its input socket was closed."""

    def __init__(self, failures: int = 0, code: int = 0, output: bytes = b"") -> None:
        self.failures, self.code, self.output = failures, code, output
        self.started = 0
        self.sockets: list[Socket] = []

    def start(self, method: str, path: str, action: str, body: Any = None) -> dict[str, Any]:
        self.started += 1
        return {"operation": f"/1.0/operations/exec{self.started}",
                "metadata": {"metadata": {"fds": {"0": "s0", "1": "s1", "2": "s2", "control": "sc"}}}}

    def websocket(self, resource: str, **handlers: Any) -> Socket:
        failing = self.started <= self.failures
        socket = Socket(resource, output=self.output if failing and "s1" in resource else b"", **handlers)
        self.sockets.append(socket)
        return socket

    def inputs(self) -> list[Socket]:
        return [socket for socket in self.sockets if "secret=s0" in socket.resource]

    def wait(self, operation: str, action: str, timeout: float | None = None) -> dict[str, Any]:
        if self.started <= self.failures:
            raise APIError(action, 400, NOT_READY)
        assert self.inputs()[-1].closed.wait(10), "the input never ended"
        return {"metadata": {"return": self.code}}


def test_input_is_sent_in_chunks_as_read_then_its_end_closes_the_socket() -> None:
    data = os.urandom(3 * INPUT_CHUNK + 5)
    api = API(code=3)
    command = start_command(api, "cci-x-1", ["sha256sum"], stdin=io.BytesIO(data))  # type: ignore[arg-type]
    assert command.wait() == 3
    [socket] = api.inputs()
    assert b"".join(socket.sent) == data and max(len(chunk) for chunk in socket.sent) <= INPUT_CHUNK
    assert socket.closed.is_set()


def test_input_from_a_pipe_goes_as_it_comes_not_when_it_ends() -> None:
    read, write = os.pipe()
    api = API()
    with os.fdopen(read, "rb", buffering=0) as source:
        command = start_command(api, "cci-x-1", ["cat"], stdin=source)  # type: ignore[arg-type]
        os.write(write, b"first line\n")
        [socket] = api.inputs()
        for _ in range(200):
            if socket.sent:
                break
            threading.Event().wait(0.01)
        assert socket.sent == [b"first line\n"] and not socket.closed.is_set()  # sent before the input ended
        os.close(write)
        assert command.wait() == 0
    assert socket.closed.is_set()


def test_no_input_is_end_of_file_at_once() -> None:
    api = API()
    assert start_command(api, "cci-x-1", ["true"]).wait() == 0
    [socket] = api.inputs()
    assert socket.sent == [] and socket.closed.is_set()


def test_a_signal_goes_over_the_control_socket() -> None:
    api = API()
    command = start_command(api, "cci-x-1", ["sleep", "9"])
    command.signal(2)
    [control] = [socket for socket in api.sockets if "secret=sc" in socket.resource]
    assert [json.loads(message) for message in control.sent] == [{"command": "signal", "signal": 2}]
    assert command.wait() == 0
    command.signal(15)  # ended: nothing to signal, no error


def test_an_exec_incus_lost_track_of_before_any_input_was_read_is_made_again_with_all_of_it() -> None:
    read, write = os.pipe()
    api = API(failures=2, code=5)
    with os.fdopen(read, "rb", buffering=0) as source:
        command = start_command(api, "cci-x-1", ["cat"], stdin=source)  # type: ignore[arg-type]
        waited = threading.Thread(target=lambda: setattr(waited, "code", command.wait()))
        waited.start()
        while api.started < 3:
            threading.Event().wait(0.01)
        os.write(write, b"all of it")
        os.close(write)
        waited.join(30)
    assert getattr(waited, "code") == 5 and api.started == 3
    assert b"".join(api.inputs()[-1].sent) == b"all of it"


def test_an_exec_incus_lost_track_of_after_its_input_was_read_from_a_pipe_is_not_made_again() -> None:
    read, write = os.pipe()
    api = API(failures=1)
    with os.fdopen(read, "rb", buffering=0) as source:
        command = start_command(api, "cci-x-1", ["cat"], stdin=source)  # type: ignore[arg-type]
        os.write(write, b"used up")
        os.close(write)
        api.inputs()[0].closed.wait(10)  # (the input was read and sent: it cannot be read again)
        with pytest.raises(APIError, match="Failed to retrieve PID"):
            command.wait()
    assert api.started == 1


@pytest.mark.parametrize("failures", [1, 3])
def test_an_exec_incus_lost_track_of_after_its_seekable_input_was_sent_is_made_again_with_all_of_it(
    tmp_path: Path, failures: int
) -> None:
    """An input that can be read again (a headless run's prompt, a file on cci's standard input) goes again from
    where it began, whole, to the exec made again: as if the lost one had had none."""
    data = b"skipped" + os.urandom(2 * INPUT_CHUNK + 9)
    (tmp_path / "input").write_bytes(data)
    for source in (io.BytesIO(data), open(tmp_path / "input", "rb")):
        with source:
            source.seek(7)
            api = API(failures=failures, code=4)
            command = start_command(api, "cci-x-1", ["cat"], stdin=source)  # type: ignore[arg-type]
            api.inputs()[0].closed.wait(10)  # (all of it was read and sent to the exec Incus then lost)
            assert command.wait() == 4 and api.started == failures + 1
            assert b"".join(api.inputs()[-1].sent) == data[7:] and api.inputs()[-1].closed.is_set()


def test_an_exec_incus_lost_track_of_after_output_came_is_not_made_again() -> None:
    api = API(failures=1, output=b"it ran\n")
    seen: list[bytes] = []
    with pytest.raises(APIError, match="Failed to retrieve PID"):
        start_command(api, "cci-x-1", ["sh", "-c", "echo it ran"], stdout=seen.append).wait()
    assert api.started == 1 and seen == [b"it ran\n"]

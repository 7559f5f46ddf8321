"""An interactive attach that Incus fails right after a start ("Failed to retrieve PID of executing child process")
is made again (tmux's client only redraws), where it used to end the attach as if the container had gone."""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from cci_builtin_plugins.incus.errors import APIError

NOT_READY = "Failed to retrieve PID of executing child process"


class Socket:
    """A websocket that carries nothing."""

    def __init__(self, on_close: Any = None, **_: Any) -> None:
        self.on_close = on_close

    def run(self) -> None:
        pass

    def send(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass


class FlakyAPI:
    """Exec operations that fail as not ready ``failures`` times (or with ``detail``), then end with status 7."""

    def __init__(self, failures: int, detail: str = NOT_READY) -> None:
        self.failures, self.detail, self.started = failures, detail, 0

    def start(self, method: str, path: str, action: str, body: Any = None) -> dict[str, Any]:
        self.started += 1
        return {"operation": f"/1.0/operations/exec{self.started}",
                "metadata": {"metadata": {"fds": {"0": "s0", "control": "sc"}}}}

    def websocket(self, resource: str, **handlers: Any) -> Socket:
        return Socket(**handlers)

    def events_resource(self, kind: str) -> str:
        return "/1.0/events"

    def wait(self, operation: str, action: str, timeout: float | None = None) -> dict[str, Any]:
        if self.started <= self.failures:
            raise APIError(action, 400, self.detail)
        return {"metadata": {"return": 7}}


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A pty as our stdin and stdout."""
    import sys

    main, pty = os.openpty()
    monkeypatch.setattr(sys, "stdin", os.fdopen(os.dup(pty), "r"))
    monkeypatch.setattr(sys, "stdout", os.fdopen(os.dup(pty), "w"))
    previous = signal.getsignal(signal.SIGWINCH)
    yield
    assert signal.getsignal(signal.SIGWINCH) == previous
    for fd in (main, pty):
        os.close(fd)


def attach(api: FlakyAPI) -> int:
    module = importlib.import_module("cci_builtin_plugins.incus.terminal")
    return int(module.attach_terminal(api, "cci-x-1", ["tmux", "attach-session"], user=1000, group=1000,
                                      environment={}, cwd="/workspace"))


def test_an_attach_incus_lost_track_of_at_the_start_is_made_again(terminal: None) -> None:
    api = FlakyAPI(failures=2)
    assert attach(api) == 7 and api.started == 3


def test_any_other_failure_of_the_exec_is_the_end_of_the_container(terminal: None) -> None:
    api = FlakyAPI(failures=1, detail="Container is not running")
    assert attach(api) == 128 + signal.SIGKILL and api.started == 1

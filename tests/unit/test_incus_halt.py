"""Killing a container returns once its init (and with it every process inside) has exited, not before, and not
after Incus's whole stop; a pid that is not the container's init here, or a remote daemon, waits for the whole stop."""

from __future__ import annotations

import importlib
import os
import subprocess
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest


class StopAPI:
    """Answers the state of an instance whose init is ``pid``; a stop kills ``process`` after ``delay`` seconds."""

    project = "cci-test"

    def __init__(self, process: subprocess.Popen[bytes], delay: float, local: bool = True) -> None:
        self.process, self.delay = process, delay
        self.endpoint = SimpleNamespace(socket="/var/lib/incus/unix.socket" if local else None)
        self.calls: list[str] = []

    def get(self, path: str, action: str, **_: Any) -> Any:
        self.calls.append(f"GET {path}")
        return {"pid": self.process.pid}

    def _stop_later(self) -> None:
        threading.Timer(self.delay, self.process.kill).start()

    def request(self, method: str, path: str, action: str, **_: Any) -> Any:
        self.calls.append(f"{method} {path}")
        self._stop_later()
        return SimpleNamespace(json=lambda: {"type": "async", "operation": "/1.0/operations/stop"})

    def call(self, method: str, path: str, action: str, body: Any = None, **_: Any) -> Any:
        self.calls.append(f"{method} {path} (waited)")
        self._stop_later()
        self.process.wait()
        time.sleep(0.5)  # the rest of the stop: devices, storage
        return {}

    def wait(self, operation: str, action: str, timeout: float | None = None) -> Any:
        self.calls.append(f"wait {operation}")
        return {}


@pytest.fixture
def sleeper() -> Any:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def halt(monkeypatch: pytest.MonkeyPatch, in_cgroup: bool) -> Any:
    module = importlib.import_module("cci_builtin_plugins.incus.halt")
    monkeypatch.setattr(module, "_in_cgroup_of", lambda pid, project, name: in_cgroup)
    return module


def test_a_kill_returns_once_the_init_has_exited(monkeypatch: pytest.MonkeyPatch, sleeper: Any) -> None:
    api = StopAPI(sleeper, delay=0.4)
    started = time.monotonic()
    halt(monkeypatch, True).kill(api, "cci-x-1", "/1.0/instances/cci-x-1", lambda request: request())
    took = time.monotonic() - started
    assert sleeper.poll() is not None and 0.35 < took < 0.45 + 0.3  # when it died: not before, not the whole stop
    assert api.calls == ["GET /1.0/instances/cci-x-1/state", "PUT /1.0/instances/cci-x-1/state"]


@pytest.mark.parametrize("local, in_cgroup", [(True, False), (False, True)], ids=["another init", "remote"])
def test_otherwise_the_whole_stop_is_waited_for(monkeypatch: pytest.MonkeyPatch, sleeper: Any, local: bool,
                                                in_cgroup: bool) -> None:
    api = StopAPI(sleeper, delay=0.1, local=local)
    started = time.monotonic()
    halt(monkeypatch, in_cgroup).kill(api, "cci-x-1", "/1.0/instances/cci-x-1", lambda request: request())
    assert time.monotonic() - started >= 0.6 and api.calls[-1] == "PUT /1.0/instances/cci-x-1/state (waited)"


def test_the_cgroup_check_names_the_instance_of_the_project() -> None:
    module = importlib.import_module("cci_builtin_plugins.incus.halt")
    assert not module._in_cgroup_of(os.getpid(), "cci-test", "cci-x-1")  # this process is in no container

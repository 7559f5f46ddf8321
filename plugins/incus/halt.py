"""Kill a container's processes and return as soon as none runs, before Incus has finished stopping it.

A forced stop kills the container's init, and with it (the kernel ends a PID namespace with its
init) every process inside, within tens of milliseconds; Incus then takes its devices and
storage down, which takes most of the stop (about 600 of 850 ms here). What a ``cci run`` waits
for before it returns is the first part alone: nothing inside can act any more (see
:meth:`SessionManager.finish <cci_core.session.SessionManager.finish>`). When the daemon is
local, the init's exit is waited on through a pidfd of it (the kernel signals it once every
process of the namespace is gone), opened before the stop begins and checked to be that
container's init by its cgroup; otherwise, or when anything does not add up, the stop is
waited for to its end.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from typing import Any

from cci_builtin_plugins.incus.errors import APIError, is_stopped_already
from cci_builtin_plugins.incus.rest import IncusAPI

#: seconds the init's exit is waited for before the stop is waited for to its end
KILL_WAIT = 30.0


def kill(api: IncusAPI, name: str, path: str, when_idle: Callable[[Callable[[], Any]], Any]) -> None:
    """Force-stop instance ``name`` (at ``path``), and return once none of its processes runs; the stop goes on."""
    pidfd = _init_pidfd(api, name, path)
    try:
        if pidfd is None:
            when_idle(lambda: api.call("PUT", f"{path}/state", f"stopping {name}", {"action": "stop", "force": True}))
            return
        answer = when_idle(lambda: api.request("PUT", f"{path}/state", f"stopping {name}",
                                               body={"action": "stop", "force": True}).json())
        ready, _, _ = select.select([pidfd], [], [], KILL_WAIT)
        if not ready:  # (a stop that failed after it began, say): its outcome tells
            api.wait(answer["operation"], f"stopping {name}")
    except APIError as exc:
        if not is_stopped_already(exc):  # (stopped meanwhile: none of its processes runs)
            raise
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _init_pidfd(api: IncusAPI, name: str, path: str) -> int | None:
    """A pidfd of the container's init when the daemon is local and the pid it gives is that init here (not a
    process of another PID namespace that has that number); None otherwise."""
    if api.endpoint.socket is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        pid = int(api.get(f"{path}/state", f"reading {name}")["pid"])
    except (APIError, KeyError, TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    if not _in_cgroup_of(pid, api.project, name):
        os.close(pidfd)
        return None
    return pidfd


def _in_cgroup_of(pid: int, project: str | None, name: str) -> bool:
    """Whether process ``pid`` is in the cgroup Incus gives instance ``name`` (``lxc.payload.[PROJECT_]NAME``)."""
    expected = f"lxc.payload.{project}_{name}" if project else f"lxc.payload.{name}"
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return False
    return any(line.split(":", 2)[-1].lstrip("/").split("/", 1)[0] == expected for line in lines)

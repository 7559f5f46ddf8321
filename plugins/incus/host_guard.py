"""The host guard: keeps the addresses the host gets later out of the containers' reach.

An Incus ACL names addresses, not "this host" (see :mod:`.networks`): the rules list the
host's addresses as they were when written. The guard is a small background process of the
user's, one per user and local Incus socket, started by every cci process that enforces a plan
there (:func:`ensure_running`). It listens to the kernel's address and route events (rtnetlink,
which needs no privilege) and, moments after an address appears or goes, writes the host's
current addresses into every cci ACL; it also checks every :data:`CHECK_SECONDS` (an event it missed, a
rule changed by hand). It exits once no container has used a cci network for
:data:`IDLE_SECONDS` and no cci process has asked for it meanwhile.

    python -I -m cci_builtin_plugins.incus.host_guard SOCKET [PROJECT]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cci_core.api import sha256, state_dir

if TYPE_CHECKING:
    import socket

    from cci_builtin_plugins.incus.networks import PolicyNetworks

#: how often the guard checks the rules without an event (and whether the networks are still used)
CHECK_SECONDS = 15.0
#: how long the networks stay unused (and nobody asks for the guard) before it exits
IDLE_SECONDS = 600.0
#: a burst of address events (an interface coming up with several) is applied once it has been quiet this long
SETTLE_SECONDS = 0.05
#: rtnetlink groups: IPv4 addresses, and IPv4 routes (a ``local`` route makes a whole prefix the host's)
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV4_ROUTE = 0x40


def lock_path(socket: Path, project: str | None) -> Path:
    """The guard's lock file for this user, Incus socket and project (the guard holds it while it runs).

    It lives in ``~/.cci/run/`` of the user's home from the password database, not
    ``$HOME`` or the temporary directory: one user has one guard whatever environment
    each cci process had, and no other local user can make the directory first
    (in a shared ``/tmp`` they could, and so keep the guard from ever starting).
    """
    digest = sha256(f"{socket}\0{project or ''}".encode()).hexdigest()[:12]
    return state_dir(_home()) / "run" / f"host-guard-{digest}.lock"


def _home() -> Path:
    """The user's home from the password database (see :func:`lock_path` for why not ``$HOME``)."""
    import pwd

    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def _open_lock(path: Path) -> int:
    """The lock file, opened; its directory made private; refused when anyone but this user owns either."""
    import stat

    for directory in (path.parent.parent, path.parent):
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
        except FileExistsError:
            pass
    info = os.lstat(path.parent)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(f"{path.parent} is not a private directory of this user")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_uid != os.getuid():
        os.close(fd)
        raise PermissionError(f"{path} belongs to another user")
    return fd


def ensure_running(socket: Path, project: str | None) -> None:
    """Start the guard for ``socket`` unless one runs; asks a running one to stay. Never fails the caller."""
    import fcntl
    import subprocess

    path = lock_path(socket, project)
    try:
        fd = _open_lock(path)
    except OSError as exc:
        _cannot_start(exc)
        return
    try:
        os.utime(fd)  # asked for now: a guard about to exit for idleness stays (see _may_exit)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # one runs
        fcntl.flock(fd, fcntl.LOCK_UN)
        log = os.open(path.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            subprocess.Popen([sys.executable, "-I", "-m", __name__, str(socket), project or ""], cwd="/",
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            os.close(log)
    except OSError as exc:
        _cannot_start(exc)
    finally:
        os.close(fd)


def _cannot_start(exc: OSError) -> None:
    from cci_core.api import warn

    warn(f"cannot start the host guard ({exc}): an address this host gets from now on stays reachable from "
         "containers until the next cci command that launches or attaches")


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _apply(networks: PolicyNetworks) -> None:
    from cci_core.api import CciError

    try:
        changed = networks.update_host_rules()
    except CciError as exc:
        _log(f"could not update the host rules: {exc}")
        return
    if changed:
        _log(f"host addresses updated in {', '.join(changed)}")


def _stop_unused_proxies(networks: PolicyNetworks) -> None:
    """Stop the proxies no container uses any more (a backstop: deleting the last one stops its proxy)."""
    from cci_core.api import CciError
    from cci_builtin_plugins.incus.proxy import stop_unused

    try:
        stopped = stop_unused(networks.api)
    except CciError as exc:
        _log(f"could not check the proxies: {exc}")
        return
    if stopped:
        _log(f"stopped the unused proxies {', '.join(stopped)}")


def _in_use(networks: PolicyNetworks) -> bool:
    from cci_core.api import CciError

    try:
        return any(network.used_by for network in networks.list())
    except CciError:
        return False  # Incus is gone: nothing to guard


def _may_exit(fd: int, path: Path) -> bool:
    """Whether the guard may go: nobody asked for it lately; a request that comes while it lets go keeps it."""
    import fcntl

    if time.time() - os.fstat(fd).st_mtime < IDLE_SECONDS:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    if time.time() - os.stat(path).st_mtime >= IDLE_SECONDS:
        return True  # a launch from now on finds the lock free and starts a new guard
    try:  # asked for just now, and that process may have seen the lock still held: stay
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # a new guard has taken over
    return False


def _drain(sock: socket.socket) -> None:
    """Read every pending event, until none came for :data:`SETTLE_SECONDS`."""
    import select

    while select.select([sock], [], [], SETTLE_SECONDS)[0]:
        try:
            sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:  # ENOBUFS: events were lost; the caller reads the addresses afresh anyway
            continue


def _code_stamp() -> tuple[tuple[str, int], ...]:
    """The guard's own code as it is on disk (an update of cci changes it)."""
    from cci_builtin_plugins.incus import networks, proxy

    stamps = []
    for module_file in (__file__, networks.__file__, proxy.__file__):
        try:
            stamps.append((module_file, os.stat(module_file).st_mtime_ns))
        except OSError:
            stamps.append((module_file, 0))
    return tuple(stamps)


def guard(networks: PolicyNetworks, fd: int, path: Path) -> bool:
    """Keep the host rules current until the networks have been unused for long enough.

    Returns True when cci's code changed on disk meanwhile: the caller starts the new one
    (guards of two versions would keep rewriting each other's rules).
    """
    import select
    import socket

    events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    events.bind((0, _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV4_ROUTE))
    events.setblocking(False)
    code = _code_stamp()
    _apply(networks)
    idle_since: float | None = None
    next_check = time.monotonic() + CHECK_SECONDS
    while True:
        if select.select([events], [], [], max(next_check - time.monotonic(), 0))[0]:
            _drain(events)
            _apply(networks)
            continue
        next_check = time.monotonic() + CHECK_SECONDS
        if _code_stamp() != code:
            events.close()
            return True
        _apply(networks)
        _stop_unused_proxies(networks)
        if _in_use(networks):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_SECONDS and _may_exit(fd, path):
            _log("no container uses a cci network: exiting")
            return False


def main(argv: list[str]) -> int:
    import fcntl

    from cci_builtin_plugins.incus.settings import IncusSettings
    from cci_builtin_plugins.incus.connection import Endpoint
    from cci_builtin_plugins.incus.networks import PolicyNetworks
    from cci_builtin_plugins.incus.rest import IncusAPI

    socket_path, project = Path(argv[0]), (argv[1] if len(argv) > 1 else "") or None
    path = lock_path(socket_path, project)
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another one was started at the same moment
    try:
        os.ftruncate(2, 0)  # the log: this guard's own
    except OSError:
        pass  # not a file
    _log(f"guarding the host's addresses for the cci networks on {socket_path}")
    if guard(PolicyNetworks(IncusAPI(Endpoint(socket=socket_path), project), IncusSettings()), fd, path):
        _log("cci was updated: starting its new guard")
        os.execv(sys.executable, [sys.executable, "-I", "-m", __name__, *argv])  # the lock goes (close-on-exec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

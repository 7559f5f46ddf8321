"""Find the Incus socket and connect to it through pylxd, with errors a user can act on."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cci_core.errors import BackendError

if TYPE_CHECKING:
    import pylxd

#: where Incus listens, in the order they are tried when nothing is configured
DEFAULT_SOCKETS = ("/var/lib/incus/unix.socket", "/run/incus/unix.socket")


def find_socket(configured: str | None, environ: Mapping[str, str]) -> Path:
    """The socket to use: ``[incus] socket``, then ``INCUS_SOCKET``, then the first default that exists."""
    for explicit in (configured, environ.get("INCUS_SOCKET")):
        if explicit:
            return Path(explicit).expanduser()
    for candidate in DEFAULT_SOCKETS:
        if Path(candidate).exists():
            return Path(candidate)
    return Path(DEFAULT_SOCKETS[0])


def check_socket(socket: Path, group: str) -> None:
    """Fail with one actionable line when the socket is missing or not ours to use."""
    if not socket.exists():
        raise BackendError(
            f"Incus is not running: no socket at {socket}",
            hint="install Incus and start it (e.g. 'sudo systemctl start incus'), or set [incus] socket",
        )
    if not os.access(socket, os.R_OK | os.W_OK):
        raise BackendError(
            f"permission denied on {socket}",
            hint=f"add yourself to the {group} group ('sudo usermod -aG {group} $USER'), then log in again",
        )


def connect(socket: Path, project: str, group: str) -> pylxd.Client:
    """A pylxd client on ``socket`` for ``project``; pylxd is imported here, not at module import."""
    check_socket(socket, group)
    import pylxd
    from pylxd.exceptions import ClientConnectionFailed, LXDAPIException

    try:
        return pylxd.Client(endpoint=str(socket), project=project)
    except ClientConnectionFailed as exc:
        raise BackendError(_connection_message(socket, exc), hint="is incusd running?") from exc
    except LXDAPIException as exc:
        raise BackendError(f"Incus refused the connection on {socket}: {exc}") from exc


def _connection_message(socket: Path, exc: Exception) -> str:
    cause: Any = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED:
            return f"Incus is not running: connection refused on {socket}"
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect to Incus on {socket}: {exc}"

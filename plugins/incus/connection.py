"""Connect to Incus through pylxd: a local unix socket or a remote HTTPS endpoint, with actionable errors."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cci_core.errors import BackendError, ConfigError

if TYPE_CHECKING:
    import pylxd

    from cci_core.config import IncusConfig

#: where Incus listens, in the order they are tried when nothing is configured;
#: the last is the per-user socket of ``incus-user`` (for users outside incus-admin)
DEFAULT_SOCKETS = ("/var/lib/incus/unix.socket", "/run/incus/unix.socket", "/var/lib/incus/unix.socket.user")


def find_socket(configured: str | None, environ: Mapping[str, str]) -> Path:
    """The socket to use: ``[incus] socket``, then ``INCUS_SOCKET``, then the first default we may use."""
    for explicit in (configured, environ.get("INCUS_SOCKET")):
        if explicit:
            return Path(explicit).expanduser()
    existing = [Path(candidate) for candidate in DEFAULT_SOCKETS if Path(candidate).exists()]
    for candidate in existing:
        if os.access(candidate, os.R_OK | os.W_OK):
            return candidate
    return existing[0] if existing else Path(DEFAULT_SOCKETS[0])


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


def connect(incus: IncusConfig, environ: Mapping[str, str]) -> pylxd.Client:
    """A pylxd client for ``[incus]``: the remote ``url`` if set, else the local socket.

    pylxd (and requests) are imported here, never at module import.
    """
    import pylxd
    from pylxd.exceptions import ClientConnectionFailed, LXDAPIException

    if incus.url:
        endpoint, options = incus.url, _remote_options(incus)
    else:
        socket = find_socket(incus.socket, environ)
        check_socket(socket, incus.group)
        endpoint, options = str(socket), {}
    try:
        return pylxd.Client(endpoint=endpoint, project=incus.project, **options)
    except ClientConnectionFailed as exc:
        raise BackendError(_connection_message(endpoint, exc), hint="is incusd running?") from exc
    except LXDAPIException as exc:
        raise BackendError(f"Incus refused the connection on {endpoint}: {exc}") from exc


def _remote_options(incus: IncusConfig) -> dict[str, Any]:
    if not (incus.client_cert and incus.client_key):
        raise ConfigError("a remote Incus needs client_cert and client_key", key="incus.url",
                          hint="generate a pair and add the certificate with 'incus config trust add-certificate'")
    files = {key: Path(value).expanduser() for key, value in
             (("client_cert", incus.client_cert), ("client_key", incus.client_key),
              ("server_cert", incus.server_cert)) if value}
    for key, path in files.items():
        if not path.is_file():
            raise ConfigError(f"{path} does not exist", key=f"incus.{key}")
    verify = str(files["server_cert"]) if "server_cert" in files else True
    return {"cert": (str(files["client_cert"]), str(files["client_key"])), "verify": verify}


def _connection_message(endpoint: str, exc: Exception) -> str:
    cause: Any = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED:
            return f"Incus is not running: connection refused on {endpoint}"
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect to Incus on {endpoint}: {exc}"

"""Where Incus listens (a local unix socket or a remote HTTPS endpoint) and actionable connection errors."""

from __future__ import annotations

import errno
import functools
import os
import socket as sockets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib import parse

from cci_core.api import BackendError, ConfigError

if TYPE_CHECKING:
    import ssl

    from cci_builtin_plugins.incus.settings import IncusSettings

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
        from cci_builtin_plugins.incus.login_group import lacks_group

        if lacks_group(group):
            hint = f"you are in group {group}, but this login started before that: log in again (or run 'newgrp {group}')"
        else:
            hint = f"add yourself to the {group} group ('sudo usermod -aG {group} $USER'), then log in again"
        raise SocketAccessError(f"permission denied on {socket}", hint=hint)


class SocketAccessError(BackendError):
    """The local socket exists but this process may not read and write it."""


class UntrustedServer(BackendError):
    """A remote Incus offered a certificate other than the pinned one."""


@functools.lru_cache(maxsize=8)
def _ssl_context(cert: tuple[str, str] | None, pinned: bool) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context()
    if pinned:  # (an Incus server's own certificate: self-signed, often for another name)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(*cert)
    return context


@functools.lru_cache(maxsize=8)
def _pinned(path: str) -> bytes:
    """The DER bytes of the (first) certificate in PEM file ``path``."""
    import ssl

    try:
        text = Path(path).read_text(encoding="ascii")
        begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
        return ssl.PEM_cert_to_DER_cert(text[text.index(begin):text.index(end) + len(end)] + "\n")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the server certificate {path}: {getattr(exc, 'strerror', None) or exc}",
                          key="incus.server_cert") from None


class Endpoint(NamedTuple):
    """Where Incus listens: a local unix ``socket``, or a remote ``url`` with a client certificate."""

    socket: Path | None = None
    url: str | None = None
    cert: tuple[str, str] | None = None
    server_cert: str | None = None

    def __str__(self) -> str:
        return self.url or str(self.socket)

    def ssl_context(self) -> ssl.SSLContext:
        """TLS for a remote Incus: our client certificate; the server's checked against the system CAs and its
        host name, or, pinned (``server_cert``), compared whole with the pinned one by :meth:`open`. Made once
        per process and endpoint (loading the system CAs and the key is most of a connection's cost otherwise)."""
        return _ssl_context(self.cert, bool(self.server_cert))

    def open(self, timeout: float | None = None) -> sockets.socket:
        """A connected socket to Incus: the unix socket, or TLS to the remote (its certificate checked)."""
        if self.socket is not None:
            sock = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(str(self.socket))
            except BaseException:
                sock.close()
                raise
            return sock
        url = parse.urlsplit(self.url or "")
        plain = sockets.create_connection((url.hostname or "", url.port or 8443), timeout=timeout)
        try:
            secure = self.ssl_context().wrap_socket(plain, server_hostname=url.hostname or "")
        except BaseException:
            plain.close()
            raise
        if self.server_cert and secure.getpeercert(binary_form=True) != _pinned(self.server_cert):
            secure.close()
            raise UntrustedServer(f"the server at {self.url} offered a certificate other than the one pinned in "
                                  f"{self.server_cert}",
                                  hint="if the server's certificate changed on purpose, add the remote again "
                                       "('incus remote remove' and 'incus remote add'), or update [incus] server_cert")
        return secure

    @property
    def host(self) -> str:
        """The Host header of a request to this endpoint."""
        if self.socket is not None:
            return "localhost"
        return parse.urlsplit(self.url or "").netloc.rpartition("@")[2]

    def untrusted_hint(self) -> str:
        """The fix when the remote does not trust our client certificate."""
        cert = self.cert[0] if self.cert else "your client certificate"
        return (f"{self.url} does not trust {cert}: on the server run 'incus config trust add-certificate' with it, "
                "or add the remote with a trust token ('incus config trust add NAME' there, "
                "'incus remote add NAME TOKEN' here)")

    def connection_error(self, exc: OSError) -> BackendError:
        """One actionable line for a failed connection."""
        import ssl

        if isinstance(exc, ssl.SSLCertVerificationError):
            return UntrustedServer(f"the certificate of the server at {self} is not trusted "
                                   f"({exc.verify_message or exc.reason})",
                                   hint="add the remote with 'incus remote add NAME URL' (it shows the certificate's "
                                        "fingerprint and pins it), or set [incus] server_cert to the server's "
                                        "certificate")
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return BackendError(f"Incus is not running: connection refused on {self}", hint="is incusd running?")
        if exc.errno == errno.EACCES:
            return BackendError(f"permission denied on {self}", hint="is your user in the incus-admin group?")
        return BackendError(f"cannot connect to Incus on {self}: {exc.strerror or exc}")


def remote_mount_error(url: str, path: Path | str) -> BackendError:
    """A host path asked of a remote Incus, which would mount what it has at that path."""
    return BackendError(f"the remote Incus {url} cannot mount {path} from this host",
                        hint="cci does not sync a workspace to a remote Incus yet: run sessions on the local one "
                             "('--remote local', or unset [incus] remote and url)")


def quote(name: str) -> str:
    """A name as one URL path segment."""
    return parse.quote(name, safe="")


def resolve_endpoint(incus: IncusSettings, environ: Mapping[str, str]) -> Endpoint:
    """The endpoint ``[incus]`` names: the remote ``url`` if set, else the local socket (checked).

    It is resolved at a command's first request, before the command has changed anything:
    when the socket refuses a login that predates the user's ``[incus] group``, the ``cci``
    command starts again under ``sg`` here (:mod:`.login_group`).
    """
    if incus.url:
        files = _remote_files(incus)
        return Endpoint(url=incus.url, cert=(files["client_cert"], files["client_key"]),
                        server_cert=files.get("server_cert"))
    socket = find_socket(incus.socket, environ)
    try:
        check_socket(socket, incus.group)
    except SocketAccessError:  # a login from before 'cci setup' added the group: cci starts again under sg
        from cci_builtin_plugins.incus.login_group import rerun_under_group

        rerun_under_group(incus.group)
        raise
    return Endpoint(socket=socket)


def _remote_files(incus: IncusSettings) -> dict[str, str]:
    if not (incus.client_cert and incus.client_key):
        raise ConfigError("a remote Incus needs client_cert and client_key", key="incus.url",
                          hint="generate a pair and add the certificate with 'incus config trust add-certificate'")
    files = {key: Path(value).expanduser() for key, value in
             (("client_cert", incus.client_cert), ("client_key", incus.client_key),
              ("server_cert", incus.server_cert)) if value}
    for key, path in files.items():
        if not path.is_file():
            raise ConfigError(f"{path} does not exist", key=f"incus.{key}")
    return {key: str(path) for key, path in files.items()}

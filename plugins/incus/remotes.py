"""The remotes of the ``incus`` command line (``incus remote add``), which ``[incus] remote`` and ``--remote`` name.

The incus CLI keeps them in ``config.yml`` in its config directory (``$INCUS_CONF``, else
``$XDG_CONFIG_HOME/incus`` or ``~/.config/incus``): ``remotes: NAME: {addr, protocol, auth_type, project}``, its
client certificate beside it (``client.crt``, ``client.key``), and the certificate of each remote it was told to
trust pinned in ``servercerts/NAME.crt``. ``local`` is the local daemon unless the file says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from cci_core.api import ConfigError

#: the remote the incus CLI always has: the local daemon
LOCAL = "local"
_ADD = "'incus remote add NAME https://HOST:8443' adds one"


class Remote(NamedTuple):
    """What cci needs of one remote: where it listens and how to log in."""

    name: str
    url: str | None = None  # https://host:port; None: the local daemon
    socket: str | None = None  # the local daemon's socket when the remote names one (unix:///path)
    project: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    server_cert: str | None = None  # the server's certificate, pinned at 'incus remote add'


def config_directory(environ: Mapping[str, str]) -> Path:
    """Where the incus CLI keeps its config: ``$INCUS_CONF``, else ``incus`` in the user's config directory."""
    if environ.get("INCUS_CONF"):
        return Path(environ["INCUS_CONF"]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "incus"


def find_remote(name: str, environ: Mapping[str, str]) -> Remote:
    """The remote ``name`` of the incus CLI's config; a :class:`ConfigError` (one line and its fix) for one cci
    cannot use."""
    directory = config_directory(environ)
    path = directory / "config.yml"
    remotes = _remotes(path)
    if name not in remotes:
        if name == LOCAL:
            return Remote(LOCAL)
        known = ", ".join(sorted(remotes)) or "none"
        raise ConfigError(f"no Incus remote {name!r} in {path} (it has: {known})", key="incus.remote",
                          hint=f"'incus remote list' shows them; {_ADD}")
    entry = remotes[name]
    addr, protocol = str(entry.get("addr") or ""), str(entry.get("protocol") or "incus")
    project = str(entry["project"]) if entry.get("project") else None
    if protocol != "incus":
        raise ConfigError(f"Incus remote {name!r} is an image server ({protocol}), not an Incus server",
                          key="incus.remote", hint=f"name a remote that runs Incus; {_ADD}")
    if addr.startswith("unix:"):
        socket = addr[len("unix:"):].lstrip("/")
        return Remote(name, socket=f"/{socket}" if socket else None, project=project)
    if not addr.startswith("https://"):
        raise ConfigError(f"Incus remote {name!r} has the address {addr!r} in {path}, not an https:// one",
                          key="incus.remote", hint=f"remove it and add it again: {_ADD}")
    auth = str(entry.get("auth_type") or "tls")
    if auth != "tls":
        raise ConfigError(f"Incus remote {name!r} logs in with {auth}, which cci does not support",
                          key="incus.remote",
                          hint=f"add it again with a client certificate: 'incus remote add {name} {addr} "
                               "--auth-type=tls'")
    cert, key = directory / "client.crt", directory / "client.key"
    for file in (cert, key):
        if not file.is_file():
            raise ConfigError(f"the incus CLI's client certificate {file} does not exist (for remote {name!r})",
                              key="incus.remote", hint="the incus CLI makes it at its first 'incus remote add'")
    pinned = directory / "servercerts" / f"{name}.crt"
    return Remote(name, url=addr.rstrip("/"), project=project, client_cert=str(cert), client_key=str(key),
                  server_cert=str(pinned) if pinned.is_file() else None)


def _remotes(path: Path) -> dict[str, Mapping[str, Any]]:
    """The ``remotes`` of the incus CLI's ``config.yml`` (none when there is no such file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", key="incus.remote") \
            from None
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path} is not valid YAML{line}", key="incus.remote",
                          hint="fix it, or move it away and add the remotes again with 'incus remote add'") from None
    remotes = document.get("remotes") if isinstance(document, dict) else None
    if remotes is None:
        return {}
    if not isinstance(remotes, dict) or not all(isinstance(entry, dict) for entry in remotes.values()):
        raise ConfigError(f"{path}: 'remotes' is not a mapping of names to remotes", key="incus.remote")
    return {str(name): entry for name, entry in remotes.items()}


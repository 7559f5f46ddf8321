"""Published ports as Incus ``proxy`` devices (:meth:`.container.IncusContainer.publish_port`).

A port is the device ``cci-port-<host port>``: ``bind=host``, ``listen=tcp:ADDRESS:HOST``,
``connect=tcp:127.0.0.1:CONTAINER``. Incus's forkproxy listens on the host and, for each
connection it accepts there, opens one to the container's own loopback: the container only
ever answers. No ``nat`` (that would route the host's packets into the container's network),
no ``proxy_protocol``, no unix socket. Only devices of exactly that shape count as published
ports; the egress device of the proxy policy (``cci-proxy``, ``bind=instance``) never does.

A host port something else holds: on a local Incus it is tried before the device is added
(:func:`check_free`), and a start or an add that loses the race is told apart from other
failures by trying the ports again (:func:`port_failure`).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cci_core.api import BackendError, PublishedPort

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.rest import IncusAPI

PREFIX = "cci-port-"
_CONNECT = "tcp:127.0.0.1:"
#: how Incus's forkproxy says a listen failed because the address is taken
_TAKEN = re.compile(r"Failed to listen on (\S+): .*address already in use")


def device_name(host_port: int) -> str:
    """The device publishing ``host_port`` (one per host port and container)."""
    return f"{PREFIX}{host_port}"


def listen_address(port: PublishedPort) -> str:
    """``ADDRESS:HOST`` as Incus and sockets write it (an IPv6 address in brackets)."""
    from cci_core.api import port_host_address

    return port_host_address(port)


def device(port: PublishedPort) -> dict[str, str]:
    """The proxy device publishing ``port``."""
    return {"type": "proxy", "bind": "host", "listen": f"tcp:{listen_address(port)}",
            "connect": f"{_CONNECT}{port.container_port}"}


def _port_of(name: str, config: Mapping[str, Any]) -> PublishedPort | None:
    """The port a device publishes, if it is one of cci's published ports (exactly :func:`device`'s shape)."""
    if not name.startswith(PREFIX) or set(config) != {"type", "bind", "listen", "connect"}:
        return None
    listen, connect = str(config.get("listen", "")), str(config.get("connect", ""))
    if config.get("type") != "proxy" or config.get("bind") != "host" or not listen.startswith("tcp:") \
            or not connect.startswith(_CONNECT):
        return None
    address, _, host = listen[len("tcp:"):].rpartition(":")
    try:
        port = PublishedPort(address.strip("[]"), int(host), int(connect[len(_CONNECT):]))
    except ValueError:
        return None
    return port if name == device_name(port.host_port) else None


def published(devices: Mapping[str, Mapping[str, Any]]) -> list[PublishedPort]:
    """The ports ``devices`` publish, by host port."""
    ports = (_port_of(name, config or {}) for name, config in devices.items())
    return sorted((port for port in ports if port is not None), key=lambda port: port.host_port)


def _try_listen(port: PublishedPort) -> int | None:
    """Listen on ``port``'s host address as forkproxy would (``SO_REUSEADDR``) and let go; the errno of a failure."""
    import socket

    family = socket.AF_INET6 if ":" in port.address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((port.address, port.host_port))
            probe.listen(1)
    except OSError as exc:
        return exc.errno
    return None


def check_free(api: IncusAPI, port: PublishedPort, exclude: str = "") -> None:
    """Refuse a host address that is taken (:class:`~cci_core.ports.PortInUse`, naming the running container other
    than ``exclude`` that publishes it), or is not this host's (a local Incus only: a remote one listens on another
    machine, whose ports cci cannot try)."""
    from cci_core.api import PortInUse

    if api.endpoint.socket is None:
        return
    failure = _try_listen(port)
    if failure == errno.EADDRINUSE:
        raise PortInUse(port, holder(api, port.host_port, exclude))
    if failure == errno.EADDRNOTAVAIL:
        raise BackendError(f"{port.address} is not an address of this host",
                           hint="publish on one of its addresses, e.g. 127.0.0.1")


def holder(api: IncusAPI, host_port: int, exclude: str = "") -> str | None:
    """A running instance of the project that publishes ``host_port`` (other than ``exclude``), if any."""
    listing = api.get("/1.0/instances", "listing containers", recursion=1) or []
    return next((str(item["name"]) for item in listing
                 if item.get("name") != exclude and str(item.get("status", "")).lower() == "running"
                 and any(port.host_port == host_port for port in published(item.get("expanded_devices") or {}))), None)


def port_failure(api: IncusAPI, name: str, ports: Iterable[PublishedPort], detail: str) -> BackendError | None:
    """The one-line error for a start or an add of container ``name`` that failed because a host port is taken
    (None: it failed for another reason)."""
    from cci_core.api import PortInUse

    ports = list(ports)
    if api.endpoint.socket is not None:
        for port in ports:
            if _try_listen(port) == errno.EADDRINUSE:
                return PortInUse(port, holder(api, port.host_port, exclude=name))
    taken = _TAKEN.search(detail)
    if taken is None:
        return None
    listen = taken.group(1)
    port = next((port for port in ports if listen_address(port) == listen), None)
    if port is not None:
        return PortInUse(port)
    return BackendError(f"{listen} is in use on the host",
                        hint="stop what listens there, or publish another host port")

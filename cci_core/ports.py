"""Published ports: the specs ``[ADDRESS:]HOST:CONTAINER`` of ``[ports] publish`` and ``--port``, read and checked.

A published port makes ``ADDRESS:HOST`` on the host lead to TCP port ``CONTAINER`` on the
container's own loopback; the driver does it (:meth:`~cci_core.driver.Container.publish_port`).
``ADDRESS`` is an IP address (an IPv6 one in brackets, ``[::1]:8080:80``), by default
``[ports] address`` (127.0.0.1); any address but a loopback one makes the port reachable
from the network, which :func:`exposure` says. See docs/sessions.md.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from cci_core.driver import PublishedPort
from cci_core.errors import BackendError

if TYPE_CHECKING:
    from cci_core.config import Config

SPEC_FORM = "[ADDRESS:]HOST:CONTAINER"
_PORT = re.compile(r"[0-9]{1,5}")
_EXAMPLE = "e.g. 8080:80, or 127.0.0.1:8080:80"


class BadPort(ValueError):
    """A port spec, port number or address that cannot be published; the message says why."""


def check_address(address: str) -> str:
    """``address`` in its canonical form, if a host can listen on it (an IP address: no name, no socket)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise BadPort(f"{address!r} is not an IP address (names and sockets cannot be published on)") from None
    if "%" in address or ip.is_multicast or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        raise BadPort(f"{address!r} is not an address a host listens on")
    return str(ip)


def port_number(text: str, what: str) -> int:
    """``text`` as a TCP port (1-65535)."""
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise BadPort(f"the {what} port {text!r} is not a number from 1 to 65535")
    return int(text)


def parse_port(spec: str, default_address: str) -> PublishedPort:
    """``[ADDRESS:]HOST:CONTAINER`` as a :class:`PublishedPort` (``default_address`` when it names none)."""
    address, rest = default_address, spec
    if spec.startswith("["):
        inside, bracket, rest = spec[1:].partition("]")
        if not bracket or not rest.startswith(":") or ":" not in inside:
            raise BadPort(f"{spec!r} is not {SPEC_FORM} ({_EXAMPLE}; an IPv6 address in brackets: [::1]:8080:80)")
        address, rest = inside, rest[1:]
    parts = rest.split(":")
    if len(parts) == 3 and not spec.startswith("["):
        address, parts = parts[0], parts[1:]
    if len(parts) != 2:
        hint = "; an IPv6 address goes in brackets: [::1]:8080:80" if len(parts) > 3 else ""
        raise BadPort(f"{spec!r} is not {SPEC_FORM} ({_EXAMPLE}{hint})")
    try:
        return PublishedPort(check_address(address), port_number(parts[0], "host"),
                             port_number(parts[1], "container"))
    except BadPort as exc:
        raise BadPort(f"{spec!r}: {exc}") from None


def check_specs(specs: list[str]) -> str | None:
    """The config check of ``[ports] publish``: each spec well-formed, no host port twice."""
    seen: dict[int, str] = {}
    for spec in specs:
        try:
            port = parse_port(spec, "127.0.0.1")
        except BadPort as exc:
            return str(exc)
        if port.host_port in seen:
            return f"host port {port.host_port} is published twice ({seen[port.host_port]!r} and {spec!r})"
        seen[port.host_port] = spec
    return None


def check_address_setting(address: str) -> str | None:
    """The config check of ``[ports] address``."""
    try:
        check_address(address)
    except BadPort as exc:
        return str(exc)
    return None


def configured_ports(config: Config) -> list[PublishedPort]:
    """The ports ``[ports] publish`` (with ``--port``) names, in order (the config checked them already)."""
    return [parse_port(spec, config.ports.address) for spec in config.ports.publish]


def is_loopback(address: str) -> bool:
    """Whether ``address`` is reachable from this machine alone (127.0.0.0/8, ::1, their IPv4-mapped forms)."""
    import ipaddress

    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def host_address(port: PublishedPort) -> str:
    """``ADDRESS:HOST`` as one writes it (an IPv6 address in brackets)."""
    address = f"[{port.address}]" if ":" in port.address else port.address
    return f"{address}:{port.host_port}"


def describe(port: PublishedPort) -> str:
    """``ADDRESS:HOST -> CONTAINER``, for messages."""
    return f"{host_address(port)} -> container port {port.container_port}"


def url(port: PublishedPort) -> str:
    """Where a browser on this machine opens the port: a wildcard address is reached on the loopback."""
    import ipaddress

    ip = ipaddress.ip_address(port.address)
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"http://{host_address(PublishedPort(str(ip), port.host_port, port.container_port))}"


def exposure(port: PublishedPort) -> str | None:
    """The warning for a port bound beyond the loopback (None for a loopback one)."""
    if is_loopback(port.address):
        return None
    return (f"published port {host_address(port)} is reachable from the network, not only from this machine: "
            "whoever reaches that address talks to the server in the container")


def command_line_ports(config: Config) -> list[PublishedPort]:
    """The ports of :func:`configured_ports` named on this command line (``--port``), not by the config files."""
    return [port for index, port in enumerate(configured_ports(config))
            if config.source_of(f"ports.publish[{index}]").startswith("--")]


def in_use(port: PublishedPort, holder: str | None = None) -> str:
    """The one line for a host port something else holds."""
    by = f" (published by {holder})" if holder else ""
    return f"{host_address(port)} is in use on the host{by}"


class PortInUse(BackendError):
    """A host port something else holds: :attr:`holder`, the cci container that publishes it, or None (another
    program, or nothing the driver can name)."""

    def __init__(self, port: PublishedPort, holder: str | None = None) -> None:
        super().__init__(in_use(port, holder), hint="stop what listens there, or publish another host port")
        self.port, self.holder = port, holder



class PortChoice(NamedTuple):
    """A published port as ``cci port remove`` names it: its host port, and its address and container port if
    given."""

    host_port: int
    address: str | None = None
    container_port: int | None = None

    def matches(self, port: PublishedPort) -> bool:
        return port.host_port == self.host_port and self.address in (None, port.address) \
            and self.container_port in (None, port.container_port)


def parse_choice(text: str) -> PortChoice:
    """``HOST``, ``ADDRESS:HOST`` or a whole spec ``[ADDRESS:]HOST:CONTAINER``."""
    if _PORT.fullmatch(text):
        return PortChoice(port_number(text, "host"))
    try:
        port = parse_port(text, "127.0.0.1")
    except BadPort:
        address, colon, host = text.rpartition(":")
        if not colon or not address:
            raise BadPort(f"{text!r} is not HOST, ADDRESS:HOST or {SPEC_FORM}") from None
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        try:
            return PortChoice(port_number(host, "host"), check_address(address))
        except BadPort as exc:
            raise BadPort(f"{text!r}: {exc}") from None
    named = text.startswith("[") or text.count(":") == 2
    return PortChoice(port.host_port, port.address if named else None, port.container_port)


def as_json(port: PublishedPort) -> dict[str, object]:
    """One published port in the JSON of ``cci port list`` and ``cci list`` (docs/cli.md): add fields, never
    rename."""
    return {"address": port.address, "host_port": port.host_port, "container_port": port.container_port,
            "url": url(port)}

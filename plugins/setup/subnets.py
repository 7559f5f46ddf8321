"""Choosing IPv4 ranges no route of the host and no Incus network uses (pure: the facts come in as arguments)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

IPv4Network = ipaddress.IPv4Network

#: private /16s tried in this order: 10.150-10.254, then the rest of 10/8, then 172.16/12 (192.168/16 is left
#: to home networks and VPNs, which often claim its /24s without a route here)
_SECOND_OCTETS = (*range(150, 255), *range(1, 150))
CANDIDATE_16S = (*(IPv4Network(f"10.{octet}.0.0/16") for octet in _SECOND_OCTETS),
                 *(IPv4Network(f"172.{octet}.0.0/16") for octet in range(16, 32)))


def parse_proc_route(text: str) -> list[IPv4Network]:
    """The destinations of ``/proc/net/route`` (addresses in little-endian hex); the default route is left out."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
        except ValueError:
            continue
        network = IPv4Network(f"{destination}/{mask}", strict=False)
        if network.prefixlen:
            found.append(network)
    return found


#: route types that claim no range on a network (addresses of the host itself, and the like)
_NOT_ROUTED = frozenset({"local", "broadcast", "multicast", "anycast"})
_ROUTE_TYPES = _NOT_ROUTED | {"unicast", "unreachable", "blackhole", "prohibit", "throw", "nat"}


def parse_ip_routes(text: str) -> list[IPv4Network]:
    """The destinations of ``ip -4 route show table all`` (every table: a VPN such as wg-quick routes through
    its own); default routes and the local table's ``local`` and ``broadcast`` entries are left out."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        kind, rest = (fields[0], fields[1:]) if fields and fields[0] in _ROUTE_TYPES else ("unicast", fields)
        if kind in _NOT_ROUTED or not rest or rest[0] == "default":
            continue
        try:
            network = IPv4Network(rest[0], strict=False)
        except ValueError:
            continue
        if network.prefixlen:
            found.append(network)
    return found


def free_blocks(prefixlen: int, taken: Iterable[IPv4Network]) -> Iterator[IPv4Network]:
    """Blocks of ``/prefixlen`` (16 or longer) inside :data:`CANDIDATE_16S` that overlap nothing in ``taken``."""
    used = list(taken)
    for candidate in CANDIDATE_16S:
        for block in candidate.subnets(new_prefix=prefixlen):
            if not any(block.overlaps(network) for network in used):
                yield block


def pick_range(taken: Iterable[IPv4Network]) -> IPv4Network | None:
    """A free private /16 for cci's policy networks (one /24 each), or None when every candidate is used."""
    return next(free_blocks(16, taken), None)


def pick_bridge(taken: Iterable[IPv4Network]) -> IPv4Network | None:
    """A free /24 for the bridge setup makes for the default profile, or None."""
    return next(free_blocks(24, taken), None)

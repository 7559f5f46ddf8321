"""The build container's DNS: find out whether it works, and the in-container fix when it does not.

On hosts with systemd-resolved, DHCP may hand containers ``127.0.0.53``: the
host's stub resolver, which answers only on the host. When names do not
resolve but addresses are reachable, cci writes public resolvers into the
build container's ``/etc/resolv.conf`` (so into the image), and never changes
the host's Incus network.
"""

from __future__ import annotations

from typing import NamedTuple

#: resolvers written into the image when the network's DNS does not work
PUBLIC_RESOLVERS = ("8.8.8.8", "8.8.4.4", "1.1.1.1")
#: resolvers that only answer on the host itself
HOST_ONLY = ("127.0.0.53", "127.0.0.1", "::1")


class DnsVerdict(NamedTuple):
    """Whether to replace the container's resolvers, and why."""

    fix: bool
    reason: str


def nameservers(resolv_conf: str) -> list[str]:
    """The ``nameserver`` entries of a resolv.conf, in order."""
    servers = []
    for line in resolv_conf.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return servers


def judge(resolv_conf: str, *, names_resolve: bool, addresses_reachable: bool) -> DnsVerdict:
    """Decide on the fix: only when names fail while addresses work (otherwise DNS is not the problem)."""
    servers = nameservers(resolv_conf)
    if names_resolve:
        return DnsVerdict(False, "DNS works")
    if not addresses_reachable:
        return DnsVerdict(False, "no connectivity at all: a DNS fix would not help")
    if not servers:
        return DnsVerdict(True, "resolv.conf names no nameserver")
    if all(server in HOST_ONLY for server in servers):
        return DnsVerdict(True, f"resolv.conf points at the host-only resolver {servers[0]}")
    return DnsVerdict(True, f"the nameservers {', '.join(servers)} do not answer")


def fixed_resolv_conf() -> str:
    """The static resolv.conf the image gets."""
    lines = ["# written by 'cci build': the network's DNS did not work in the build container"]
    return "\n".join(lines + [f"nameserver {server}" for server in PUBLIC_RESOLVERS]) + "\n"

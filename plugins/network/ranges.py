"""Address ranges that no container may reach unless the policy is ``open``."""

from __future__ import annotations

from cci_core.api import Rule

#: RFC 1918 private networks, the link-local range of cloud metadata endpoints, and the other ranges that
#: lead to private hosts: shared address space (carrier-grade NAT, Tailscale and other VPN peers), the
#: benchmarking range some VPNs and proxies hand out as "fake IPs", IETF protocol assignments and the
#: reserved class E
PRIVATE_IPV4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                "100.64.0.0/10", "198.18.0.0/15", "192.0.0.0/24", "240.0.0.0/4")

#: every IPv6 destination: cci's networks carry IPv4 only, so IPv6 cannot be a way around the rules
ALL_IPV6 = ("::/0",)

#: the rejections every restricting policy starts with (rejections win over any allow)
BLOCKED = (
    Rule("reject", PRIVATE_IPV4, "private networks and cloud metadata"),
    Rule("reject", ALL_IPV6, "IPv6"),
)


def is_private(address: str) -> bool:
    """Whether an IPv4 address lies in one of :data:`PRIVATE_IPV4`."""
    import ipaddress

    ip = ipaddress.IPv4Address(address)
    return any(ip in ipaddress.IPv4Network(cidr) for cidr in PRIVATE_IPV4)

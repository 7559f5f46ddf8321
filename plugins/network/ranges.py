"""Address ranges that no container may reach unless the policy is ``open``."""

from __future__ import annotations

#: RFC 1918 private networks and the link-local range of cloud metadata endpoints
PRIVATE_IPV4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")

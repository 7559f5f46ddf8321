"""``allowlist``: only the domains and IPv4 addresses in ``allowed_domains``."""

from __future__ import annotations

import re

from cci_core import hookimpl
from cci_core.config.schema import NetworkConfig
from cci_core.errors import ConfigError
from cci_core.network_policy import NetworkPolicy
from cci_core.registry import Register

_LABEL = r"^(?!-)[a-z0-9-]{1,63}(?<!-)$"  # compiled on first use


def is_domain_name(text: str) -> bool:
    """True for a fully qualified host name such as ``api.github.com``."""
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and len(labels) >= 2 and all(re.match(_LABEL, label, re.IGNORECASE) for label in labels)


def is_ipv4_address(text: str) -> bool:
    """True for a dotted-quad IPv4 address such as ``8.8.8.8``."""
    import ipaddress

    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


class AllowlistPolicy(NetworkPolicy):
    name = "allowlist"
    summary = "only allowed_domains (names or IPv4 addresses); private networks always blocked"

    def validate(self, settings: NetworkConfig) -> None:
        if not settings.allowed_domains:
            raise ConfigError(
                "allowlist mode needs at least one entry in allowed_domains",
                key="network.allowed_domains",
                hint='e.g. allowed_domains = ["api.anthropic.com"]',
            )
        for entry in settings.allowed_domains:
            if not (is_ipv4_address(entry) or is_domain_name(entry)):
                raise ConfigError(
                    f"{entry!r} is neither a domain name nor an IPv4 address",
                    key="network.allowed_domains",
                )


@hookimpl
def cci_register(register: Register) -> None:
    register.add_network_policy(AllowlistPolicy)

"""``allowlist``: only the domains and IPv4 addresses in ``allowed_domains``.

An entry that only a proxy can enforce (a pattern ``*.x`` / ``.x``, a port, an IPv6 address),
or ``presets`` or ``denied_domains`` set, makes it the ``proxy`` mode's plan (:mod:`.proxy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cci_core.api import ConfigError, NetworkConfig, NetworkPlan, NetworkPolicy, Register, Rule, hookimpl
from cci_builtin_plugins.network.patterns import address_problem, name_problem
from cci_builtin_plugins.network.ranges import BLOCKED, is_private

if TYPE_CHECKING:
    from cci_core.api import LaunchContext

_KEY = "network.allowed_domains"


def is_domain_name(text: str) -> bool:
    """True for a fully qualified host name such as ``api.github.com``."""
    return name_problem(text.rstrip(".").lower()) is None


def is_ipv4_address(text: str) -> bool:
    """True for a dotted-quad IPv4 address such as ``8.8.8.8``."""
    import ipaddress

    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def split_entries(entries: list[str]) -> tuple[list[str], list[str]]:
    """``allowed_domains`` as (names, addresses), lower-cased, without duplicates, in their order."""
    names: list[str] = []
    addresses: list[str] = []
    for entry in dict.fromkeys(entry.strip().rstrip(".").lower() for entry in entries):
        (addresses if is_ipv4_address(entry) else names).append(entry)
    return names, addresses


def needs_proxy(settings: NetworkConfig) -> bool:
    """Whether ``settings`` ask for what only the proxy mode enforces: patterns, ports, IPv6, presets or denials."""
    return bool(settings.presets or settings.denied_domains) or any(
        entry.strip().startswith(("*", ".", "[")) or ":" in entry for entry in settings.allowed_domains)


class AllowlistPolicy(NetworkPolicy):
    name = "allowlist"
    summary = ("only allowed_domains (names or IPv4 addresses; with *.x patterns or ports: through the proxy); "
               "private networks and IPv6 always blocked")

    def _proxy(self) -> NetworkPolicy:
        from cci_builtin_plugins.network.proxy import ProxyPolicy

        return ProxyPolicy(self.config)

    def validate(self, settings: NetworkConfig) -> None:
        if needs_proxy(settings):
            self._proxy().validate(settings)
            return
        if not settings.allowed_domains:
            raise ConfigError(
                "allowlist mode needs at least one entry in allowed_domains",
                key=_KEY,
                hint='e.g. allowed_domains = ["api.anthropic.com"]',
            )
        for entry in settings.allowed_domains:
            cleaned = entry.strip()
            if is_ipv4_address(cleaned):
                problem = address_problem(cleaned, self.name)
                if problem:
                    raise ConfigError(f"{problem}: remove it", key=_KEY)
            elif not is_domain_name(cleaned):
                raise ConfigError(
                    f"{entry!r} is neither a domain name nor an IPv4 address",
                    key=_KEY,
                    hint="write names like 'api.github.com' (no scheme, port or wildcard) or addresses like '1.1.1.1'",
                )

    def plan(self, settings: NetworkConfig) -> NetworkPlan:
        if needs_proxy(settings):
            plan = self._proxy().plan(settings)
            assert plan is not None
            return plan
        from cci_builtin_plugins.network.resolver import resolve_names

        names, listed = split_entries(settings.allowed_domains)
        resolution = resolve_names(names)
        rules = [Rule("allow", found, name) for name, found in resolution.addresses.items() if found]
        if listed:
            rules.append(Rule("allow", tuple(listed), "listed addresses"))
        notes = list(resolution.notes)
        for name, found in resolution.addresses.items():
            private = [address for address in found if is_private(address)]
            if private:
                notes.append(f"{name} resolves to {', '.join(private)}, in a private range: blocked all the same")
        return NetworkPlan(
            self.name,
            identity=",".join(sorted([*names, *listed])),
            default="reject",
            rules=(*BLOCKED, *rules),
            settings={"mode": self.name, "allowed_domains": [*names, *listed],
                      "refresh_interval_minutes": settings.refresh_interval_minutes},
            addresses=resolution.addresses,
            refresh_minutes=settings.refresh_interval_minutes if names else 0,  # addresses alone never change
            notes=tuple(notes),
        )


@hookimpl
def cci_register(register: Register) -> None:
    register.add_network_policy(AllowlistPolicy)


@hookimpl
def cci_sandbox_brief(ctx: LaunchContext) -> list[str] | None:
    from cci_builtin_plugins.network import brief

    return [brief.allowlist(ctx.network_plan)] if brief.policy_in_force(ctx) == "allowlist" else None

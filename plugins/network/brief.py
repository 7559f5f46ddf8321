"""What each built-in network policy tells the agent in the sandbox brief (``cci_sandbox_brief``): a few lines on
what it can reach and what happens to the rest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cci_builtin_plugins.network import patterns
from cci_builtin_plugins.network.ranges import PRIVATE_IPV4

if TYPE_CHECKING:
    from cci_core.api import HostRule, LaunchContext, NetworkPlan

#: how a blocked connection ends under a policy enforced by the network's rules
REJECTED = ("the user's host, private networks ({ranges}), cloud metadata and all of IPv6 are blocked outside the "
            "container, whatever you do inside: such connections are refused").format(ranges=", ".join(PRIVATE_IPV4))


def policy_in_force(ctx: LaunchContext) -> str:
    """The policy whose plan the session is under (an allowlist that needs a proxy is a ``proxy`` plan)."""
    return ctx.network_plan.policy if ctx.network_plan is not None else ctx.network_policy


def heading(policy: str) -> str:
    return f"**Network (`{policy}` policy):**"


def listed(names: Iterable[str]) -> str:
    """Names as inline code, comma-separated."""
    return ", ".join(f"`{name}`" for name in names) or "none"


def restricted() -> str:
    return f"{heading('restricted')} the public internet (IPv4) is open to you; {REJECTED}."


def allowlist(plan: NetworkPlan | None) -> str:
    names = plan.settings.get("allowed_domains", ()) if plan is not None else ()
    return (f"{heading('allowlist')} you can reach only {listed(names)} (at the addresses they had when the session "
            f"started, refreshed now and then); everything else is refused, and {REJECTED}.")


def proxy(plan: NetworkPlan | None) -> str:
    rules: tuple[HostRule, ...] = plan.proxy.rules if plan is not None and plan.proxy is not None else ()
    sources: dict[str, list[str]] = {}
    for rule in rules:
        key = "denied" if rule.action == "deny" else (rule.source or "allowed")
        sources.setdefault(key, []).append(patterns.describe(rule._replace(source="")))
    lines = [f"{heading('proxy')} nothing leaves the container directly: HTTP and HTTPS go through cci's proxy "
             "(`HTTP_PROXY` and `HTTPS_PROXY` are set, its CA is trusted), which lets through only requests to:"]
    lines += [f"- {source}: {listed(names)}" for source, names in sources.items() if source != "denied"]
    if "denied" in sources:
        lines.append(f"- never (denied_domains): {listed(sources['denied'])}")
    if any(rule.pattern.startswith(("*", ".")) or rule.ports for rule in rules):
        lines.append("`*.x`: the subdomains of x; `.x`: x and its subdomains; ports 80 and 443 unless others are "
                     "named.")
    lines.append("A refused request gets a 403 from the proxy saying cci's network policy does not allow it; "
                 "anything but HTTP(S) (SSH, raw TCP, UDP) does not get out at all.")
    return "\n".join(lines)


def open_network() -> str:
    return (f"{heading('open')} no restriction from cci: the container is on the network Incus gives it, which may "
            "reach the user's host and local network.")

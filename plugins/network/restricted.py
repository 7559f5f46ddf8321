"""``restricted``: the public internet, but no private networks or metadata endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cci_core.api import NetworkConfig, NetworkPlan, NetworkPolicy, Register, hookimpl
from cci_builtin_plugins.network.ranges import BLOCKED, PRIVATE_IPV4

if TYPE_CHECKING:
    from cci_core.api import LaunchContext


class RestrictedPolicy(NetworkPolicy):
    name = "restricted"
    summary = f"public internet allowed; blocks {', '.join(PRIVATE_IPV4)} and IPv6"

    def validate(self, settings: NetworkConfig) -> None:
        """Every setting is acceptable: restricted mode reads none."""

    def plan(self, settings: NetworkConfig) -> NetworkPlan:
        return NetworkPlan(self.name, "", "allow", BLOCKED, settings={"mode": self.name})


@hookimpl
def cci_register(register: Register) -> None:
    register.add_network_policy(RestrictedPolicy)


@hookimpl
def cci_sandbox_brief(ctx: LaunchContext) -> list[str] | None:
    from cci_builtin_plugins.network import brief

    return [brief.restricted()] if brief.policy_in_force(ctx) == "restricted" else None

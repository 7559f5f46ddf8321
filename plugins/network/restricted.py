"""``restricted``: the public internet, but no private networks or metadata endpoints."""

from __future__ import annotations

from cci_core.api import NetworkConfig, NetworkPlan, NetworkPolicy, Register, hookimpl
from cci_builtin_plugins.network.ranges import BLOCKED, PRIVATE_IPV4


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

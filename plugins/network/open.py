"""``open``: no restrictions, for trusted projects only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cci_core.api import NetworkConfig, NetworkPolicy, Register, hookimpl

if TYPE_CHECKING:
    from cci_core.api import LaunchContext


class OpenPolicy(NetworkPolicy):
    name = "open"
    summary = "no restrictions: the container uses the profile's own network (trusted projects only)"

    def validate(self, settings: NetworkConfig) -> None:
        """Every setting is acceptable: open mode reads none."""

    def plan(self, settings: NetworkConfig) -> None:
        """No plan: the container keeps the network its Incus profile gives it."""
        return None


@hookimpl
def cci_register(register: Register) -> None:
    register.add_network_policy(OpenPolicy)


@hookimpl
def cci_sandbox_brief(ctx: LaunchContext) -> list[str] | None:
    from cci_builtin_plugins.network import brief

    return [brief.open_network()] if brief.policy_in_force(ctx) == "open" else None

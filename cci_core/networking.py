"""Network policies in the lifecycle: the plan a launch attaches to, and refreshing plans made from names.

Who refreshes an allowlist's addresses: every launch or resume (``cci shell``,
``cci run``: its own plan is made afresh), every ``cci shell`` and ``cci attach``
(any plan in use whose interval has passed), an attached ``cci shell`` or
``cci attach`` every :data:`~cci_core.session_attach.SAVE_INTERVAL` seconds, and
``cci network refresh``. While no cci process runs, nobody does: the rules stay
as last applied (schedule ``cci network refresh --due`` to cover that).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from cci_core.errors import NotAvailableError

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.config.schema import NetworkConfig
    from cci_core.driver import Driver, PolicyNetwork
    from cci_core.network_policy import NetworkPlan, NetworkPolicy
    from cci_core.registry import Registries


class Attachment(NamedTuple):
    """Where a launch goes: the policy's name, the network enforcing it (None: the default one), the plan."""

    policy: str
    network: str | None
    plan: NetworkPlan | None


class Refreshed(NamedTuple):
    """One refreshed network: the names whose addresses changed (old, new) and notes to pass on."""

    network: str
    changes: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    notes: tuple[str, ...]


def make_policy(cls: type[NetworkPolicy], config: Config | None) -> NetworkPolicy:
    """An instance of the policy class ``cls`` with ``config`` (its ``self.config``).

    A policy whose own ``__init__`` takes no config (written before policies were made
    with it) is made as it was then, and given the config afterwards.
    """
    import inspect

    try:
        inspect.signature(cls).bind(config)
    except TypeError:
        policy = cls()
        policy.config = config
        return policy
    return cls(config)


def policy_for(config: Config, registries: Registries) -> NetworkPolicy:
    """The policy ``[network] mode`` names, made with ``config`` and its settings validated.

    An unknown mode lists the available ones.
    """
    policy = make_policy(registries.network_policies.get(config.network.mode), config)
    policy.validate(config.network)
    return policy


def attach(config: Config, registries: Registries, driver: Driver,
           check: Callable[[NetworkPlan | None], None] | None = None) -> Attachment:
    """Make the configured policy's plan and have the driver enforce it; before any container is made.

    ``check`` sees the plan first (and may refuse it) before the driver makes anything.
    """
    plan = policy_for(config, registries).plan(config.network)
    if check is not None:
        check(plan)
    if plan is None:
        return Attachment(config.network.mode, None, None)
    return Attachment(config.network.mode, driver.ensure_network(plan), plan)


def settings_of(plan: NetworkPlan) -> NetworkConfig:
    """The ``[network]`` settings a stored plan was made from."""
    from cci_core.config.schema import NetworkConfig

    known: dict[str, Any] = {key: value for key, value in plan.settings.items() if key in NetworkConfig._fields}
    return NetworkConfig(**{"mode": plan.policy, **known})


def is_due(network: PolicyNetwork, now: float) -> bool:
    """Whether a network's plan is made from names, in use, and older than its refresh interval."""
    minutes = network.plan.refresh_minutes
    return bool(minutes and network.used_by and now - network.refreshed_at >= minutes * 60)


def refresh(driver: Driver, registries: Registries, *, force: bool = False,
            names: Iterable[str] = (), now: float | None = None) -> list[Refreshed]:
    """Make the plans of due networks again (all named ones, or every one with ``force``) and apply them."""
    wanted = set(names)
    now = time.time() if now is None else now
    refreshed = []
    for network in driver.policy_networks():
        if wanted and network.name not in wanted:
            continue
        if not (force or wanted) and not is_due(network, now):
            continue
        try:
            policy = make_policy(registries.network_policies.get(network.plan.policy), driver.config)
        except NotAvailableError as exc:  # its plugin was disabled or removed: the rules stay as they are
            refreshed.append(Refreshed(network.name, {}, (f"not refreshed: {exc}",)))
            continue
        plan = policy.plan(settings_of(network.plan))
        if plan is None:
            continue
        driver.ensure_network(plan)
        changes = {name: (network.plan.addresses.get(name, ()), found) for name, found in plan.addresses.items()
                   if tuple(network.plan.addresses.get(name, ())) != tuple(found)}
        refreshed.append(Refreshed(network.name, changes, plan.notes))
    return refreshed

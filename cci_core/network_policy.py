"""The network-policy interface: what a container may reach, chosen by ``[network] mode``.

A policy turns the ``[network]`` settings (and any section of its own plugin's, read
from the merged config it is made with) into a :class:`NetworkPlan`: egress rules and
a default action. The driver enforces a plan outside the container
(for Incus: a network ACL on a managed network of the plan's own), so root
inside cannot lift it, and it is in force before the container first boots.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.config.schema import NetworkConfig

Action = Literal["allow", "reject"]

#: the description of the rule by which a driver keeps containers away from the host's own addresses
HOST_RULE = "this host"

#: the description of the rule by which a driver rejects multicast and broadcast, whatever the plan
BROADCAST_RULE = "multicast and broadcast"

#: what :data:`BROADCAST_RULE` always holds: every multicast group and the limited broadcast (the driver adds
#: the broadcast address of each of the host's networks). Such datagrams are delivered to the host itself,
#: to every service listening on all of its addresses, and are never forwarded anywhere a container needs.
MULTICAST_AND_BROADCAST = ("224.0.0.0/4", "255.255.255.255")

#: longest :attr:`NetworkPlan.key`: network names become Linux interface names (15 bytes) with ``cci-`` before
MAX_KEY_LENGTH = 11


class Rule(NamedTuple):
    """One egress rule: ``action`` for traffic to any of ``destinations`` (CIDRs or addresses).

    Rejections win over allows, whatever their order: an address in a
    rejected range stays unreachable even when a rule allows it.
    """

    action: Action
    destinations: tuple[str, ...]
    description: str = ""


#: the ports a :class:`HostRule` without ports covers: HTTP and HTTPS
DEFAULT_PORTS = (80, 443)


class HostRule(NamedTuple):
    """One rule of a filtering proxy: ``action`` for requests to a host matching ``pattern``.

    ``pattern`` is written as in ``allowed_domains``: an exact name (``api.github.com``),
    its subdomains only (``*.example.com``), the name and its subdomains (``.example.com``),
    or an IP address. ``ports``: those only; empty: :data:`DEFAULT_PORTS`. Denials win
    over allows, whatever their order. ``source`` says where the rule came from
    (``allowed_domains``, ``preset github``...), for the request log and ``cci network show``.
    """

    action: Literal["allow", "deny"]
    pattern: str
    ports: tuple[int, ...] = ()
    source: str = ""


class ProxySpec(NamedTuple):
    """What a plan's filtering proxy enforces: host rules by name, and the proxy's own host map.

    :param rules: the host rules; a request no rule allows is denied.
    :param hosts: names the proxy resolves itself (name -> IP address), before any DNS.
    """

    rules: tuple[HostRule, ...]
    hosts: Mapping[str, str] = MappingProxyType({})


class NetworkPlan(NamedTuple):
    """What a policy asks the driver to enforce for every container that uses it.

    :param policy: the policy's name (``[network] mode``).
    :param identity: what tells two plans of one policy apart (e.g. the allowlist's
        sorted domains); plans with the same policy and identity share one network.
    :param default: the action for traffic no rule matches.
    :param rules: egress rules.
    :param settings: the ``[network]`` settings the plan was made from; stored with the
        network so that a refresh can make the plan again without the user's config.
    :param addresses: for plans built from names: each name's addresses, as enforced.
    :param refresh_minutes: how often the plan should be made again (0: never).
    :param notes: what the user should know (e.g. a name that did not resolve).
    :param block_host: the driver also rejects the addresses of the host the containers run on
        (all but the DHCP and DNS of their network), whatever they are, including those it gets
        later; a policy that must reach a service on the host (a proxy, say) sets it to False.
        Multicast and broadcast (:data:`BROADCAST_RULE`) are rejected for every plan either way.
    :param proxy: when set, containers reach nothing directly: their HTTP and HTTPS go through a
        filtering proxy the driver runs for this plan, which enforces these host rules; ``rules``
        and ``default`` are then the proxy's own egress (what it may connect to).
    """

    policy: str
    identity: str
    default: Action
    rules: tuple[Rule, ...]
    settings: Mapping[str, object] = MappingProxyType({})
    addresses: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    refresh_minutes: int = 0
    notes: tuple[str, ...] = ()
    block_host: bool = True
    proxy: ProxySpec | None = None

    @property
    def key(self) -> str:
        """A short stable name for the plan's network: the policy name, or a digest with its identity."""
        if not self.identity and len(self.policy) <= MAX_KEY_LENGTH:
            return self.policy
        from cci_core.digests import sha256

        digest = sha256(f"{self.policy}\0{self.identity}".encode()).hexdigest()[:8]
        return f"{self.policy[:2]}-{digest}"


class RequestRecord(NamedTuple):
    """One request through a plan's proxy, as its log has it (``cci network log``).

    :param time: seconds since the epoch, when it ended.
    :param method: ``GET``, ``CONNECT``... (``CONNECT`` for HTTPS that was not opened).
    :param host: the name (or address) the client asked for; ``sni``: the TLS server name it sent.
    :param allowed: whether the proxy let it through; ``rule``: the rule that decided
        (its pattern and source), or why it was denied.
    :param status: the HTTP status the client got (0: none).
    :param sent, received: bytes from and to the client; ``duration_ms``: how long it took.
    """

    time: float
    method: str
    host: str
    port: int
    allowed: bool
    rule: str
    status: int = 0
    sni: str = ""
    sent: int = 0
    received: int = 0
    duration_ms: int = 0
    client: str = ""


class NetworkPolicy(ABC):
    """A named network mode (``restricted``, ``allowlist``, ``open``, or a plugin's own).

    Subclasses are registered with ``register.add_network_policy(cls)``. cci makes one
    with the invocation's merged config, so that a policy can read a section its plugin
    declared (``self.config.section("office")``); ``config`` is None only where no
    config was loaded (tests). At a refresh (:func:`cci_core.networking.refresh`) the
    ``settings`` are those stored with the plan, and ``config`` is the refreshing
    invocation's: a policy whose plan depends on its own section keeps what it needs
    in :attr:`NetworkPlan.settings` and its identity.
    """

    name: ClassVar[str]
    summary: ClassVar[str]

    def __init__(self, config: Config | None = None) -> None:
        self.config = config

    @abstractmethod
    def validate(self, settings: NetworkConfig) -> None:
        """Reject settings this policy cannot enforce, with a :class:`~cci_core.errors.ConfigError`.

        Called before anything is launched.
        """

    @abstractmethod
    def plan(self, settings: NetworkConfig) -> NetworkPlan | None:
        """The rules to enforce for ``settings`` (already validated), or None for no restriction at all.

        May do slow work such as resolving names; called at every launch and refresh.
        """

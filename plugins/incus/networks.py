"""Network policies on Incus: one managed bridge per distinct plan, with the plan as its network ACL.

A network-level ACL works on every kernel seen (NIC-level ACLs need bridge
conntrack, which some kernels lack), so each plan gets a bridge of its own
(``cci-<key>``, see :func:`network_name`) whose ACL of the same name holds the
plan's egress rules.
Incus applies the rules in the host's nftables, outside the container, and a
container is attached to the bridge before its first start. Incus itself lets
DHCP and DNS to the bridge through and orders rejections before allows.

Traffic to the host itself goes through the same ACL rules as traffic the host
forwards (Incus jumps to one chain from its input and its forward hooks), and an
ACL rule names addresses only: nothing in Incus says "any address of this host".
So the driver adds rules of its own to every plan (:func:`host_rules`):
multicast and broadcast, and the host's addresses as they are now;
:mod:`.host_guard` puts the addresses it gets later in as they appear.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cci_core.api import (
    BROADCAST_RULE,
    HOST_RULE,
    LABEL_PREFIX,
    MULTICAST_AND_BROADCAST,
    Backoff,
    BackendError,
    ConfigError,
    NetworkPlan,
    PolicyNetwork,
    Rule,
    sha256,
)
from cci_builtin_plugins.incus.errors import APIError, APINotFound, is_conflict
from cci_builtin_plugins.incus.proxy import proxy_users, spec_json, spec_of
from cci_builtin_plugins.incus.rest import quote

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.proxy import ProxyContainers
    from cci_builtin_plugins.incus.settings import IncusSettings
    from cci_builtin_plugins.incus.rest import IncusAPI

PREFIX = "cci-"
POLICY_KEY = LABEL_PREFIX + "policy"
#: the ACL key holding a plan's :class:`~cci_core.network_policy.ProxySpec` (see :mod:`.proxy`)
PROXY_KEY = LABEL_PREFIX + "proxy"
#: the plan setting with the PEM text of ``[network] proxy_trust_ca`` (the proxy policy's)
TRUST_CA_PEM = "proxy_trust_ca_pem"
_NO_AUTO_SUBNET = "find an unused IPv4 subnet"
_SUBNET_TRIES = 8
#: the rules :func:`host_rules` adds (a refresh of the host's addresses replaces them)
DRIVER_RULES = (BROADCAST_RULE, HOST_RULE)
#: every loopback address: a bridge with ``route_localnet`` on would deliver them to the host's local services
LOOPBACK = "127.0.0.0/8"


def network_name(plan: NetworkPlan, *, nat: bool = True) -> str:
    """The bridge of ``plan``: at most 15 characters, as Linux requires of an interface name.

    ``cci-<key>``; without NAT (``[incus] network_nat = false``) ``cci-nonat-<digest of
    the key>``, another bridge: a cci whose config differs in NAT (cci's own tests, say)
    never switches the NAT of the bridges in use by another.
    """
    if nat:
        return PREFIX + plan.key
    return f"{PREFIX}nonat-{sha256(plan.key.encode()).hexdigest()[:5]}"


def acl_body(plan: NetworkPlan) -> dict[str, Any]:
    """The ACL for ``plan``: its egress rules, and the plan itself in ``user.cci.*`` keys."""
    return {
        "description": f"cci network policy {plan.policy}",
        "egress": [_acl_rule(rule) for rule in plan.rules if rule.destinations],
        "ingress": [],
        "config": {key: value for key, value in {  # Incus drops keys with empty values: so do we
            POLICY_KEY: plan.policy,
            LABEL_PREFIX + "identity": plan.identity,
            LABEL_PREFIX + "default": plan.default,
            LABEL_PREFIX + "settings": json.dumps(dict(plan.settings), sort_keys=True),
            LABEL_PREFIX + "addresses": json.dumps({name: list(found) for name, found in plan.addresses.items()}),
            LABEL_PREFIX + "refresh-minutes": str(plan.refresh_minutes),
            LABEL_PREFIX + "block-host": "true" if plan.block_host else "false",
            LABEL_PREFIX + "refreshed-at": f"{time.time():.0f}",
            PROXY_KEY: spec_json(plan.proxy) if plan.proxy is not None else "",
        }.items() if value},
    }


def plan_of(acl: Mapping[str, Any]) -> tuple[NetworkPlan, float]:
    """The plan an ACL made by :func:`acl_body` enforces, and when it was applied."""
    config = acl.get("config") or {}

    def value(key: str, default: str = "") -> str:
        return str(config.get(LABEL_PREFIX + key, default))

    rules = tuple(Rule(rule.get("action", "reject"), tuple(filter(None, rule.get("destination", "").split(","))),
                       rule.get("description", ""))
                  for rule in acl.get("egress") or ())
    addresses = {name: tuple(found) for name, found in json.loads(value("addresses", "{}")).items()}
    plan = NetworkPlan(
        policy=value("policy"), identity=value("identity"), default=value("default", "reject"),  # type: ignore[arg-type]
        rules=rules, settings=json.loads(value("settings", "{}")), addresses=addresses,
        refresh_minutes=int(value("refresh-minutes", "0") or 0),
        block_host=blocks_host(acl), proxy=spec_of(value("proxy")),
    )
    return plan, float(value("refreshed-at", "0") or 0)


class KernelAddresses(NamedTuple):
    """This machine's IPv4 addresses as its kernel routes them.

    ``local``: addresses and whole prefixes it delivers to itself (a ``local`` route for a
    prefix makes every address in it the host's); ``broadcast``: its networks' broadcast addresses.
    """

    local: tuple[str, ...] = ()
    broadcast: tuple[str, ...] = ()


def blocks_host(acl: Mapping[str, Any]) -> bool:
    """Whether an ACL made by :func:`acl_body` keeps containers away from the host (older ACLs: its host rule)."""
    stored = (acl.get("config") or {}).get(LABEL_PREFIX + "block-host")
    if stored is not None:
        return str(stored) == "true"
    return any(rule.get("description") == HOST_RULE for rule in acl.get("egress") or ())


def kernel_addresses(fib_trie: Path = Path("/proc/net/fib_trie")) -> KernelAddresses:
    """Every ``host LOCAL`` and ``link BROADCAST`` entry of the kernel's routing tables, without running ``ip``."""
    local: set[ipaddress.IPv4Network] = set()
    broadcast: set[ipaddress.IPv4Network] = set()
    last = ""
    try:
        lines = fib_trie.read_text().splitlines()
    except OSError:
        return KernelAddresses()
    for line in lines:
        text = line.strip()
        if text.startswith(("|--", "+--")):
            last = text[3:].split()[0]
        elif text.startswith("/") and last and text.endswith((" host LOCAL", " link BROADCAST")):
            try:
                network = ipaddress.IPv4Network(f"{last}{text.split()[0]}", strict=False)
            except ValueError:
                continue
            (local if text.endswith("LOCAL") else broadcast).add(network)
    return KernelAddresses(_cidrs(local), _cidrs(broadcast))


def _cidrs(networks: Iterable[ipaddress.IPv4Network]) -> tuple[str, ...]:
    """Networks in order, a single address without its ``/32``."""
    return tuple(str(network.network_address) if network.prefixlen == 32 else str(network)
                 for network in sorted(set(networks)))


def host_rules(interfaces: list[ipaddress.IPv4Interface], kernel: KernelAddresses, *,
               block_host: bool) -> tuple[Rule, ...]:
    """The rules the driver adds to a plan: multicast and broadcast, and (``block_host``) the host's own addresses.

    ``interfaces`` are the host's addresses Incus reports, ``kernel`` those its kernel routes
    (none for a remote Incus). A datagram to a multicast group, to the limited broadcast or to
    the broadcast address of one of the host's networks is delivered to the host itself: every
    service listening on all of its addresses gets it.
    """
    def beyond(covered: Iterable[str], networks: Iterable[ipaddress.IPv4Network]) -> tuple[str, ...]:
        known = [ipaddress.IPv4Network(cidr) for cidr in covered]
        return _cidrs(network for network in networks if not any(network.subnet_of(wider) for wider in known))

    broadcasts = {ipaddress.IPv4Network(interface.network.broadcast_address) for interface in interfaces
                  if interface.network.prefixlen < 31}
    broadcasts.update(map(ipaddress.IPv4Network, kernel.broadcast))
    covered = (*MULTICAST_AND_BROADCAST, LOOPBACK)
    rules = [Rule("reject", (*MULTICAST_AND_BROADCAST, *beyond(covered, broadcasts)), BROADCAST_RULE)]
    if block_host:
        own = {ipaddress.IPv4Network(interface.ip) for interface in interfaces}
        own.update(map(ipaddress.IPv4Network, kernel.local))
        rules.append(Rule("reject", (LOOPBACK, *beyond((LOOPBACK,), own)), HOST_RULE))
    return tuple(rules)


def _managed_addresses(networks: Iterable[Mapping[str, Any]]) -> list[ipaddress.IPv4Interface]:
    """The gateway addresses of Incus's managed networks (its bridges), from its list of networks."""
    found = []
    for network in networks:
        address = (network.get("config") or {}).get("ipv4.address", "")
        if network.get("managed") and address and "/" in address:
            found.append(ipaddress.IPv4Interface(address))
    return found


def with_host_rules(egress: list[Mapping[str, Any]], rules: tuple[Rule, ...]) -> list[dict[str, Any]]:
    """An ACL's egress rules with the driver's own (:data:`DRIVER_RULES`) replaced by ``rules``."""
    kept = [dict(rule) for rule in egress if rule.get("description") not in DRIVER_RULES]
    return kept + [_acl_rule(rule) for rule in rules]


def _outdated_egress(acl: Mapping[str, Any], rules: Mapping[bool, tuple[Rule, ...]]) -> list[dict[str, Any]] | None:
    """The egress rules ``acl`` should have, its driver rules being ``rules[block_host]``; None if it has them."""
    egress = acl.get("egress") or []
    wanted = with_host_rules(egress, rules[blocks_host(acl)])
    return None if _comparable_rules(wanted) == _comparable_rules(egress) else wanted


def _acl_rule(rule: Rule) -> dict[str, Any]:
    return {"action": rule.action, "destination": ",".join(rule.destinations), "description": rule.description,
            "state": "enabled"}


def _comparable_rules(rules: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """ACL rules with the keys cci sets only (Incus answers with every key, empty ones included)."""
    return [{key: rule.get(key, "") for key in ("action", "destination", "description", "state")} for rule in rules]


def _same_acl(current: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether an ACL already holds ``body``'s rules and plan (its refresh time aside)."""
    def comparable(document: Mapping[str, Any]) -> tuple[Any, ...]:
        config = {key: value for key, value in (document.get("config") or {}).items()
                  if key != LABEL_PREFIX + "refreshed-at"}
        return document.get("description", ""), _comparable_rules(document.get("egress") or []), config

    return comparable(current) == comparable(body)


def _instance_names(used_by: list[str]) -> tuple[str, ...]:
    """Instance names from a ``used_by`` list of URLs (``/1.0/instances/NAME?project=P``)."""
    prefix = "/1.0/instances/"
    from urllib.parse import unquote

    return tuple(unquote(url[len(prefix):].split("?")[0]) for url in used_by if url.startswith(prefix))


def _acl_path(name: str) -> str:
    return f"/1.0/network-acls/{quote(name)}"


class PolicyNetworks:
    """Creates, updates, lists and deletes cci's policy networks and their ACLs."""

    def __init__(self, api: IncusAPI, settings: IncusSettings, proxy_image: str = "cci-proxy",
                 build_image: Callable[[str], None] | None = None) -> None:
        self.api = api
        self.settings = settings
        self.proxy_image = proxy_image
        self.build_image = build_image

    @property
    def proxies(self) -> ProxyContainers:
        """The proxy containers of the plans with ``proxy`` (see :mod:`.proxy`)."""
        from cci_builtin_plugins.incus.proxy import ProxyContainers, socket_dir_of

        return ProxyContainers(self.api, self.proxy_image, socket_dir_of(self.api),
                               nic_filtering=self.settings.network_filtering, build_image=self.build_image)

    def ensure(self, plan: NetworkPlan) -> str:
        name = network_name(plan, nat=self.settings.network_nat)
        acl = self.api.get_soon(_acl_path(name), f"reading network ACL {name}")  # (meanwhile: the bridge)
        network = self._find(name)
        interfaces, kernel = self._host_addresses(bridge=network)
        plan = plan._replace(rules=(*plan.rules, *host_rules(interfaces, kernel, block_host=plan.block_host)))
        try:
            self._put_acl(name, plan, acl)
        except APIError as exc:
            # Incus could not apply the rules to the bridge while another process is still making it
            # (say the host's addresses changed since that one wrote them): once it is made, again
            pending = self._find(name)
            if pending is None:
                raise exc from None
            self._wait_created(name, pending)
            self._put_acl(name, plan)
        network = network or self._find(name)  # (another cci may have made it meanwhile)
        if network is None:
            try:
                network = self._create(name, plan, self._host_interfaces())
            except BaseException:
                self._delete_acl_quietly(name)  # nothing half-made is left: the ACL serves this network only
                raise
        network = self._wait_created(name, network)
        wanted = self._security(name, plan)
        config = network.get("config") or {}
        if any(config.get(key) != value for key, value in wanted.items()):
            self.api.call("PATCH", f"/1.0/networks/{quote(name)}", f"updating network {name}", {"config": wanted})
        if plan.proxy is not None:
            self.proxies.ensure(name, plan.proxy, str(plan.settings.get(TRUST_CA_PEM) or ""))
        self._start_guard()
        return name

    def _find(self, name: str) -> Mapping[str, Any] | None:
        try:
            return dict(self.api.get(f"/1.0/networks/{quote(name)}", f"reading network {name}"))
        except APINotFound:
            return None

    def _start_guard(self) -> None:
        """Make sure the host guard runs (see :mod:`.host_guard`): for a local Incus only."""
        if self.api.endpoint.socket is not None:
            from cci_builtin_plugins.incus import host_guard

            host_guard.ensure_running(self.api.endpoint.socket, self.api.project)

    def _wait_created(self, name: str, network: Mapping[str, Any], timeout: float = 30) -> Mapping[str, Any]:
        """The bridge once created: waits while another process is still creating it (Incus says ``Pending``)."""
        backoff = Backoff(timeout)
        while str(network.get("status", "Created")) == "Pending" and backoff.pause():
            network = self.api.get(f"/1.0/networks/{quote(name)}", f"reading network {name}")
        status = str(network.get("status", "Created"))
        if status != "Created":
            raise BackendError(f"network {name} is {status}, not ready",
                               hint=f"see 'incus network show {name}'; 'cci network delete {name}' starts it afresh")
        return network

    def _put_acl(self, name: str, plan: NetworkPlan, read: Callable[[], Any] | None = None) -> None:
        """Create or update the ACL; an unchanged static plan is left alone (an update costs Incus a
        firewall reload). ``read``: the ACL's read, if started already (see :meth:`IncusAPI.get_soon`)."""
        body = acl_body(plan)
        path = _acl_path(name)
        try:
            current = read() if read is not None else self.api.get(path, f"reading network ACL {name}")
        except APINotFound:
            try:
                self.api.call("POST", "/1.0/network-acls", f"creating network ACL {name}", {"name": name, **body})
                return
            except APIError as exc:
                if not is_conflict(exc):
                    raise
                current = None  # another cci made it meanwhile: ours replaces it
        if current is not None and not plan.refresh_minutes and _same_acl(current, body):
            return
        self.api.call("PUT", path, f"updating network ACL {name}", body)

    def _delete_acl_quietly(self, name: str) -> None:
        try:
            self.api.call("DELETE", _acl_path(name), f"deleting network ACL {name}")
        except APIError:
            pass  # in use by a network another cci made meanwhile, or gone already

    def _security(self, name: str, plan: NetworkPlan) -> dict[str, str]:
        """The bridge settings the plan depends on; set again whenever they drifted (e.g. changed by hand)."""
        return {
            "ipv4.nat": "true" if self.settings.network_nat else "false",
            "ipv6.address": "none",
            "security.acls": name,
            "security.acls.default.egress.action": plan.default,
            "security.acls.default.ingress.action": "allow",
            POLICY_KEY: plan.policy,
        }

    def _create(self, name: str, plan: NetworkPlan, interfaces: list[ipaddress.IPv4Interface]) -> dict[str, Any]:
        for subnet in self._subnets(name, interfaces):
            body = {"name": name, "type": "bridge", "description": f"cci network policy {plan.policy}",
                    "config": {**self._security(name, plan), "ipv4.address": subnet}}
            try:
                self.api.call("POST", "/1.0/networks", f"creating network {name}", body)
            except APIError as exc:
                if is_conflict(exc):
                    break  # another cci created it at the same moment: use theirs
                if _NO_AUTO_SUBNET in exc.detail:
                    raise ConfigError(
                        f"Incus could not find a free IPv4 subnet for network {name}",
                        key="incus.network_subnets",
                        hint='set it to a range unused on this machine, e.g. network_subnets = "10.150.0.0/16"',
                    ) from exc
                if subnet != "auto" and any(word in exc.detail.lower() for word in ("overlap", "in use")):
                    continue  # taken since we looked: the next one
                raise
            break
        else:
            raise BackendError(f"no free /24 left in incus.network_subnets ({self.settings.network_subnets}) "
                               f"for network {name}", hint="give a larger or another range")
        return dict(self.api.get(f"/1.0/networks/{quote(name)}", f"reading network {name}"))

    def subnets_to_try(self, name: str) -> list[str]:
        """What creating bridge ``name`` would ask Incus for: ``["auto"]``, or free /24s of the range (none: full)."""
        return list(self._subnets(name, self._host_interfaces()))

    def _subnets(self, name: str, interfaces: list[ipaddress.IPv4Interface]) -> Iterator[str]:
        """Gateway addresses to try: ``auto``, or free /24s of the configured range (from a per-name start)."""
        pool = self.settings.network_subnets
        if pool == "auto":
            yield "auto"
            return
        network = ipaddress.IPv4Network(pool)
        blocks = list(network.subnets(new_prefix=24)) if network.prefixlen <= 24 else [network]
        used = [interface.network for interface in interfaces]
        start = int(sha256(name.encode()).hexdigest(), 16) % len(blocks)
        free = [block for block in blocks[start:] + blocks[:start] if not any(block.overlaps(u) for u in used)]
        for block in free[:_SUBNET_TRIES]:
            yield f"{next(block.hosts())}/{block.prefixlen}"

    def _host_interfaces(self, networks: list[Mapping[str, Any]] | None = None) -> list[ipaddress.IPv4Interface]:
        """The IPv4 addresses of the host Incus runs on: its interfaces' state and the bridges' own.

        ``networks``: Incus's list of networks, if read already.
        """
        if networks is None:
            networks = self.api.get("/1.0/networks", "listing networks", recursion=1) or []
        found = _managed_addresses(networks)
        for network in networks:
            if not network.get("managed"):
                try:
                    state = self.api.get(f"/1.0/networks/{quote(network['name'])}/state", "reading host addresses")
                except APINotFound:
                    continue  # gone since the list was made
                found += [ipaddress.IPv4Interface(f"{entry['address']}/{entry['netmask']}")
                          for entry in (state or {}).get("addresses") or () if entry.get("family") == "inet"]
        return found

    def _host_addresses(self, networks: list[Mapping[str, Any]] | None = None, bridge: Mapping[str, Any] | None = None,
                        ) -> tuple[list[ipaddress.IPv4Interface], KernelAddresses]:
        """The host's addresses for :func:`host_rules`: those Incus reports, and (a local Incus) those the kernel routes.

        Incus lists most of the host's interfaces but not all (veth pairs, say): on a local Incus the
        kernel's own list completes it. When the kernel routes the managed ``bridge``'s address (or, without
        one, every managed bridge's) here, this process shares the daemon's network namespace and the kernel's
        list holds every interface: Incus's are not read then (its list of networks costs it 100 ms and more
        with many bridges, each state a request, at every launch).
        """
        kernel = kernel_addresses() if self.api.endpoint.socket is not None else KernelAddresses()
        routed = [ipaddress.IPv4Network(cidr) for cidr in kernel.local]

        def here(interfaces: list[ipaddress.IPv4Interface]) -> bool:
            return bool(interfaces) and all(any(item.ip in network for network in routed) for item in interfaces)

        if bridge is not None and here(_managed_addresses([bridge])):
            return [], kernel
        if networks is None:
            networks = self.api.get("/1.0/networks", "listing networks", recursion=1) or []
        managed = _managed_addresses(networks)
        if here(managed):
            return managed, kernel
        return self._host_interfaces(networks), kernel

    def update_host_rules(self) -> list[str]:
        """Put the host's current addresses into every cci ACL (they may have changed since it was written).

        Only the driver's own rules change; an ACL changed meanwhile by another process is read
        again (Incus refuses an update whose ETag is stale). Returns the names of the ACLs changed.
        """
        networks = self.api.get("/1.0/networks", "listing networks", recursion=1) or []
        interfaces, kernel = self._host_addresses(networks)
        rules = {block_host: host_rules(interfaces, kernel, block_host=block_host) for block_host in (False, True)}
        # a bridge another process is still making gets its rules from that process (Incus could not apply
        # ours to it yet); the next check covers what changed meanwhile
        ready = {network["name"] for network in networks if str(network.get("status", "Created")) == "Created"}
        changed = []
        failed: list[BackendError] = []
        for acl in self.api.get("/1.0/network-acls", "listing network ACLs", recursion=1) or []:
            if POLICY_KEY not in (acl.get("config") or {}) or acl["name"] not in ready:
                continue
            if _outdated_egress(acl, rules) is None:
                continue  # up to date (the common case): not even read again
            try:
                if self._update_host_rules(acl["name"], rules):
                    changed.append(acl["name"])
            except BackendError as exc:  # the others are updated all the same
                failed.append(exc)
        if failed:
            raise BackendError("; ".join(str(exc) for exc in failed))
        return changed

    def _update_host_rules(self, name: str, rules: Mapping[bool, tuple[Rule, ...]], tries: int = 5) -> bool:
        """Replace the driver's rules in one ACL by ``rules[block_host]``; whether it changed."""
        path = _acl_path(name)
        for _ in range(tries):
            try:
                response = self.api.request("GET", path, f"reading network ACL {name}")
            except APINotFound:
                return False  # deleted meanwhile
            acl = response.json().get("metadata") or {}
            wanted = _outdated_egress(acl, rules)
            if wanted is None:
                return False
            body = {"description": acl.get("description", ""), "egress": wanted,
                    "ingress": acl.get("ingress") or [], "config": acl.get("config") or {}}
            try:
                self.api.call("PUT", path, f"updating network ACL {name}", body,
                              headers={"If-Match": response.headers.get("ETag", "")})
                return True
            except APINotFound:
                return False  # deleted meanwhile
            except APIError as exc:
                if exc.status != 412:  # 412: changed since it was read: read it again
                    raise
        raise BackendError(f"network ACL {name} kept changing while its host rules were updated")

    def list(self) -> list[PolicyNetwork]:
        networks = [network for network in self.api.get("/1.0/networks", "listing networks", recursion=1) or []
                    if POLICY_KEY in (network.get("config") or {})]
        if not networks:
            return []
        acls = {acl["name"]: acl for acl in self.api.get("/1.0/network-acls", "listing network ACLs", recursion=1)
                or []}
        result = []
        proxies: dict[str, Mapping[str, Any]] | None = None
        for network in networks:
            name = network["name"]
            acl = acls.get(name)
            if acl is None:
                continue
            plan, refreshed_at = plan_of(acl)
            used_by = _instance_names(network.get("used_by") or [])
            proxy = ""
            if plan.proxy is not None:
                if proxies is None:
                    proxies = proxy_users(self.api.get("/1.0/instances", "listing containers", recursion=1) or [],
                                          self.proxies.socket)
                found = proxies.get(name) or {}
                proxy = str(found.get("proxy", ""))
                used_by = tuple(item for item in (*used_by, *found.get("agents", ())) if item != proxy)
            result.append(PolicyNetwork(name, plan, refreshed_at, used_by,
                                        (network.get("config") or {}).get("ipv4.address", ""), proxy,
                                        str((proxies or {}).get(name, {}).get("status", ""))))
        if any(item.used_by for item in result):  # containers Incus started by itself (at boot) are guarded
            self._start_guard()                    # from the next cci command that looks (attach, shell, network)
        return sorted(result, key=lambda item: item.name)

    def delete(self, name: str) -> None:
        try:
            network = self.api.get(f"/1.0/networks/{quote(name)}", f"reading network {name}")
        except APINotFound:
            network = None
        if network is not None:
            if POLICY_KEY not in (network.get("config") or {}):
                raise BackendError(f"network {name} was not made by cci; cci leaves it alone")
            self.proxies.delete(name)  # its proxy container goes first: it holds the bridge
            self.api.call("DELETE", f"/1.0/networks/{quote(name)}", f"deleting network {name}")
        try:
            self.api.call("DELETE", _acl_path(name), f"deleting network ACL {name}")
        except APINotFound:
            if network is None:
                raise

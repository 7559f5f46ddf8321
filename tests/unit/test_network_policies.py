"""Network policies: plans, validation, the address cache, refresh decisions, and how a launch uses them.

Enforcement itself (Incus ACLs on real bridges, probed from inside containers) is
tested in tests/integration/test_network_policies.py.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import pytest

from cci_core import hookimpl
from cci_core.config import Override, load_config
from cci_core.config.schema import NetworkConfig, Setting, non_empty
from cci_core.errors import ConfigError, NotAvailableError
from cci_core.network_policy import MAX_KEY_LENGTH, NetworkPlan, NetworkPolicy, Rule
from cci_core.networking import is_due, policy_for, refresh, settings_of
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_builtin_plugins.incus.instance_config import nic_devices
from cci_builtin_plugins.incus.networks import acl_body, network_name, plan_of
from cci_builtin_plugins.network import resolver
from cci_builtin_plugins.network.allowlist import AllowlistPolicy
from cci_builtin_plugins.network.ranges import PRIVATE_IPV4
from cci_builtin_plugins.network.restricted import RestrictedPolicy
from tests.fakes import FakeDriver

DNS: dict[str, tuple[str, ...] | None] = {}
"""What the faked host resolver answers (None: the lookup fails)."""


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    DNS.clear()

    def resolve(name: str) -> tuple[str, ...]:
        answer = DNS.get(name)
        if answer is None:
            raise socket.gaierror(-2, "Name or service not known")
        return answer

    monkeypatch.setattr(resolver, "resolve_ipv4", resolve)


def allowlist(*entries: str, refresh: int = 30) -> NetworkConfig:
    return NetworkConfig(mode="allowlist", allowed_domains=list(entries), refresh_interval_minutes=refresh)


# --- the built-in policies -------------------------------------------------------------------------------


def test_restricted_rejects_private_ranges_and_ipv6_and_allows_the_rest() -> None:
    plan = RestrictedPolicy().plan(NetworkConfig())
    assert plan.default == "allow"
    assert [(rule.action, rule.destinations) for rule in plan.rules] == [("reject", PRIVATE_IPV4), ("reject", ("::/0",))]
    assert (plan.key, network_name(plan), plan.refresh_minutes) == ("restricted", "cci-restricted", 0)


def test_allowlist_allows_resolved_names_and_listed_addresses_only() -> None:
    DNS.update({"api.example.org": ("198.51.100.2", "198.51.100.3"), "github.com": ("198.51.100.4",)})
    plan = AllowlistPolicy().plan(allowlist("GitHub.com", "api.example.org", "8.8.8.8", "github.com."))
    assert plan.default == "reject"
    assert plan.rules[:2] == RestrictedPolicy().plan(NetworkConfig()).rules  # private ranges and IPv6 always
    assert [(rule.action, rule.destinations, rule.description) for rule in plan.rules[2:]] == [
        ("allow", ("198.51.100.4",), "github.com"),
        ("allow", ("198.51.100.2", "198.51.100.3"), "api.example.org"),
        ("allow", ("8.8.8.8",), "listed addresses"),
    ]
    assert plan.addresses == {"github.com": ("198.51.100.4",), "api.example.org": ("198.51.100.2", "198.51.100.3")}
    assert plan.refresh_minutes == 30 and plan.notes == ()


def test_allowlist_network_depends_on_the_entries_not_their_order_or_addresses() -> None:
    DNS.update({"a.example.org": ("198.51.100.2",), "b.example.org": ("198.51.100.3",)})
    first = AllowlistPolicy().plan(allowlist("a.example.org", "b.example.org"))
    DNS["a.example.org"] = ("198.51.100.9",)
    second = AllowlistPolicy().plan(allowlist("B.example.org", "a.example.org", refresh=5))
    other = AllowlistPolicy().plan(allowlist("a.example.org"))
    assert first.key == second.key != other.key
    assert first.key.startswith("al-") and len(network_name(first)) <= 15


def test_plan_keys_fit_an_interface_name() -> None:
    long = NetworkPlan("a-very-long-policy-name", "", "allow", ())
    assert len(long.key) <= MAX_KEY_LENGTH and long.key != NetworkPlan("a-very-long-policy-nam", "", "allow", ()).key


def test_a_bridge_without_nat_is_another_bridge() -> None:
    plans = [RestrictedPolicy().plan(NetworkConfig()), NetworkPlan("a-very-long-policy-name", "", "allow", ()),
             NetworkPlan("allowlist", "x.example.org", "reject", ())]
    names = [network_name(plan, nat=nat) for plan in plans for nat in (True, False)]
    assert len(set(names)) == len(names) and all(len(name) <= 15 for name in names)
    assert network_name(plans[0], nat=False).startswith("cci-nonat-")


@pytest.mark.parametrize(("entries", "message"), [
    ((), "allowlist mode needs at least one entry in allowed_domains"),
    (("https://github.com",), "'https://github.com': has a scheme"),  # (its ':' makes it a proxy entry)
    (("*.",), "'*.': names no domain"),
    (("github",), "is neither a domain name nor an IPv4 address"),
    (("1.2.3.400",), "is neither a domain name nor an IPv4 address"),
    (("2001:db8::1",), "has more than one ':'"),
    (("10.1.2.3",), "10.1.2.3 is in a private range, which allowlist mode always blocks"),
    (("100.100.100.100",), "100.100.100.100 is in a private range"),  # a Tailscale peer's resolver
    (("127.0.0.1",), "127.0.0.1 is a loopback address"),
    (("0.0.0.0",), "0.0.0.0 is the unspecified address"),
])
def test_bad_allowlists_are_refused_naming_the_key(entries: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AllowlistPolicy().validate(allowlist(*entries))
    assert message in str(caught.value) and caught.value.key == "network.allowed_domains"


# --- resolution and the address cache --------------------------------------------------------------------


def test_a_dns_failure_keeps_the_last_good_addresses(isolated_env: Path) -> None:
    DNS["api.example.org"] = ("198.51.100.2",)
    AllowlistPolicy().plan(allowlist("api.example.org"))
    cache = isolated_env / ".cci" / "network" / "addresses.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700

    DNS["api.example.org"] = None  # the resolver is down
    plan = AllowlistPolicy().plan(allowlist("api.example.org"))
    assert plan.addresses == {"api.example.org": ("198.51.100.2",)}
    assert plan.rules[-1] == Rule("allow", ("198.51.100.2",), "api.example.org")
    assert len(plan.notes) == 1 and "could not resolve api.example.org" in plan.notes[0]
    assert "keeping its addresses from" in plan.notes[0]

    DNS["api.example.org"] = ("198.51.100.3",)  # back, with a new address: the cache follows
    assert AllowlistPolicy().plan(allowlist("api.example.org")).addresses == {"api.example.org": ("198.51.100.3",)}


def test_a_name_that_never_resolved_is_unreachable_and_said_so() -> None:
    plan = AllowlistPolicy().plan(allowlist("gone.example.org", "8.8.4.4"))
    assert plan.addresses == {"gone.example.org": ()} and plan.refresh_minutes == 30
    assert AllowlistPolicy().plan(allowlist("8.8.4.4")).refresh_minutes == 0  # nothing to resolve again
    assert [rule.description for rule in plan.rules if rule.action == "allow"] == ["listed addresses"]
    assert "no earlier addresses are known" in plan.notes[0]


def test_a_name_resolving_to_a_private_address_stays_blocked_and_is_reported() -> None:
    DNS["intranet.example.org"] = ("10.1.2.3",)
    plan = AllowlistPolicy().plan(allowlist("intranet.example.org"))
    assert plan.notes == ("intranet.example.org resolves to 10.1.2.3, in a private range: blocked all the same",)


def test_a_corrupt_cache_counts_as_empty(isolated_env: Path) -> None:
    path = isolated_env / "cache.json"
    path.write_text("{not json")
    cache = resolver.AddressCache(path)
    assert cache.load() == {}
    cache.store({"a.example.org": resolver.Cached(("198.51.100.2",), 1.0)})
    assert cache.load() == {"a.example.org": resolver.Cached(("198.51.100.2",), 1.0)}


# --- the plan as stored by the Incus driver --------------------------------------------------------------


def test_an_acl_holds_the_whole_plan() -> None:
    DNS["api.example.org"] = ("198.51.100.2",)
    plan = AllowlistPolicy().plan(allowlist("api.example.org", "8.8.8.8", refresh=15))
    body = acl_body(plan)
    assert body["egress"][2] == {"action": "allow", "destination": "198.51.100.2", "description": "api.example.org",
                                 "state": "enabled"}
    assert "" not in body["config"].values()  # Incus drops empty keys: an update would never compare equal
    restored, refreshed_at = plan_of(body)
    assert restored._replace(notes=()) == plan._replace(notes=())
    assert refreshed_at > 0
    assert settings_of(restored) == NetworkConfig(mode="allowlist", allowed_domains=["api.example.org", "8.8.8.8"],
                                                  refresh_interval_minutes=15)


def test_the_nic_moves_to_the_policy_network_isolated_and_with_spoofing_filters() -> None:
    profile = {"eth0": {"type": "nic", "network": "incusbr0", "name": "eth0"}, "root": {"type": "disk"},
               "eth1": {"type": "nic", "network": "other"}}
    assert nic_devices(profile, "cci-restricted", filtering=True) == {
        "eth0": {"type": "nic", "network": "cci-restricted", "name": "eth0", "security.port_isolation": "true",
                 "security.mac_filtering": "true", "security.ipv4_filtering": "true"},
        "eth1": {"type": "none"},  # a second way out would bypass the policy
    }
    assert nic_devices({}, "cci-x", filtering=False) == {
        "eth0": {"type": "nic", "network": "cci-x", "name": "eth0", "security.port_isolation": "true"}}


# --- launches and refreshes (fake driver) ---------------------------------------------------------------


def manager(tmp_path: Path, *overrides: tuple[str, object]) -> SessionManager:
    config = load_config(tmp_path, environ={}, overrides=[
        Override("defaults.driver", "fake", "test"),
        *(Override(key, value, "test") for key, value in overrides)])
    plugins = load_plugins(entry_points=False, extra=[("fake", FakeDriverPlugin())])
    return SessionManager(config, FakeDriver(config), plugins, warn=lambda message: None)


class FakeDriverPlugin:
    from cci_core import hookimpl

    @hookimpl
    def cci_register(self, register):  # type: ignore[no-untyped-def]
        register.add_driver(FakeDriver)


def test_a_launch_attaches_the_container_to_its_policy_network(tmp_path: Path) -> None:
    sessions = manager(tmp_path)
    container, _ctx = sessions.launch(LaunchRequest(tmp_path, kind="run"))
    assert container.network == "cci-restricted"
    assert container.labels()["network"] == "restricted"

    opened = manager(tmp_path, ("network.mode", "open"))
    container, _ctx = opened.launch(LaunchRequest(tmp_path, kind="run"))
    assert container.network is None and container.labels()["network"] == "open"
    assert opened.driver.networks == {}


def test_a_bad_policy_fails_before_any_container_exists(tmp_path: Path) -> None:
    sessions = manager(tmp_path, ("network.mode", "allowlist"))
    with pytest.raises(ConfigError):
        sessions.launch(LaunchRequest(tmp_path, kind="run"))
    unknown = manager(tmp_path, ("network.mode", "nope"))
    with pytest.raises(NotAvailableError):
        unknown.launch(LaunchRequest(tmp_path, kind="run"))
    assert sessions.driver.containers == {} and unknown.driver.containers == {}


def test_only_due_networks_in_use_are_refreshed(tmp_path: Path) -> None:
    DNS["api.example.org"] = ("198.51.100.2",)
    sessions = manager(tmp_path, ("network.mode", "allowlist"), ("network.allowed_domains", ["api.example.org"]),
                       ("network.refresh_interval_minutes", 30))
    driver, registries = sessions.driver, sessions.plugins.registries
    container, _ctx = sessions.launch(LaunchRequest(tmp_path, kind="run"))
    (network,) = driver.policy_networks()
    assert network.used_by == (container.name,)
    now = network.refreshed_at
    assert not is_due(network, now + 29 * 60) and is_due(network, now + 30 * 60)

    DNS["api.example.org"] = ("198.51.100.7",)
    assert refresh(driver, registries, now=now + 60) == []  # not due yet
    (done,) = refresh(driver, registries, now=now + 31 * 60)
    assert done.changes == {"api.example.org": (("198.51.100.2",), ("198.51.100.7",))}
    assert driver.policy_networks()[0].plan.addresses == {"api.example.org": ("198.51.100.7",)}

    container.network = None  # nobody uses it any more: no refresh, however old
    assert refresh(driver, registries, now=now + 999 * 60) == []
    assert [item.network for item in refresh(driver, registries, names=[network.name])] == [network.name]


def test_a_third_party_policy_is_chosen_by_mode_and_enforced(tmp_path: Path) -> None:
    from cci_core import hookimpl
    from cci_core.network_policy import NetworkPolicy

    class Proxy(NetworkPolicy):
        name = "proxy-only"
        summary = "only the proxy"

        def validate(self, settings: NetworkConfig) -> None:
            pass

        def plan(self, settings: NetworkConfig) -> NetworkPlan:
            return NetworkPlan(self.name, "", "reject", (Rule("allow", ("198.51.100.8",), "proxy"),))

    class Plugin:
        @hookimpl
        def cci_register(self, register):  # type: ignore[no-untyped-def]
            register.add_driver(FakeDriver)
            register.add_network_policy(Proxy)

    config = load_config(tmp_path, environ={}, overrides=[Override("defaults.driver", "fake", "test"),
                                                          Override("network.mode", "proxy-only", "test")])
    sessions = SessionManager(config, FakeDriver(config), load_plugins(entry_points=False, extra=[("proxy", Plugin())]))
    container, _ctx = sessions.launch(LaunchRequest(tmp_path, kind="run"))
    assert container.network == "cci-proxy-only" and container.labels()["network"] == "proxy-only"
    assert sessions.driver.networks["cci-proxy-only"][0].rules == (Rule("allow", ("198.51.100.8",), "proxy"),)


class Counting(NetworkPolicy):
    """A policy as written before policies were made with the config: an ``__init__`` of its own, taking nothing."""

    name = "counting"
    summary = "only the proxy, counting its plans"

    def __init__(self) -> None:
        super().__init__()
        self.plans = 0

    def validate(self, settings: NetworkConfig) -> None:
        pass

    def plan(self, settings: NetworkConfig) -> NetworkPlan:
        self.plans += 1
        return NetworkPlan(self.name, "", "reject", (Rule("allow", ("198.51.100.8",), "proxy"),),
                           settings={"mode": self.name}, refresh_minutes=1)


class CountingPlugin:
    @hookimpl
    def cci_register(self, register: Any) -> None:
        register.add_driver(FakeDriver)
        register.add_network_policy(Counting)


def test_a_policy_whose_own_init_takes_no_config_is_made_as_before(tmp_path: Path) -> None:
    plugins = load_plugins(entry_points=False, extra=[("counting", CountingPlugin())])
    config = load_config(tmp_path, environ={}, plugins=plugins, overrides=[
        Override("defaults.driver", "fake", "test"), Override("network.mode", "counting", "test")])
    policy = policy_for(config, plugins.registries)
    assert isinstance(policy, Counting) and policy.config is config  # given the config all the same
    sessions = SessionManager(config, FakeDriver(config), plugins)
    container, _ctx = sessions.launch(LaunchRequest(tmp_path, kind="run"))
    assert container.network == "cci-counting"
    (refreshed,) = refresh(sessions.driver, plugins.registries, force=True)
    assert refreshed.network == "cci-counting" and refreshed.notes == ()
    from cci_core.doctor import network_policy_check

    assert network_policy_check(config, plugins).status == "ok"


class OfficeSettings(NamedTuple):
    """``[office]``: the section a third-party policy's plugin declares."""

    proxy: Annotated[str, Setting("The office proxy's address.", check=non_empty)] = "203.0.113.8"


class OfficePolicy(NetworkPolicy):
    """Only the office proxy, read from the plugin's own section."""

    name = "office"
    summary = "only the office proxy"

    def validate(self, settings: NetworkConfig) -> None:
        if self.config is None or settings.allowed_domains:
            raise ConfigError("office mode needs its [office] section and no allowed_domains")

    def plan(self, settings: NetworkConfig) -> NetworkPlan:
        assert self.config is not None
        proxy = self.config.section("office").proxy
        return NetworkPlan(self.name, proxy, "reject", (Rule("allow", (proxy,), "proxy"),),
                           settings={"mode": self.name}, refresh_minutes=1)


class OfficePlugin:
    @hookimpl
    def cci_register(self, register: Any) -> None:
        register.add_driver(FakeDriver)
        register.add_network_policy(OfficePolicy)
        register.add_settings("office", OfficeSettings)


def test_a_third_party_policy_reads_its_own_section_at_launch_and_refresh(tmp_path: Path) -> None:
    from cci_core.networking import attach

    (tmp_path / ".cci.toml").write_text('[office]\nproxy = "198.51.100.9"\n')
    plugins = load_plugins(entry_points=False, extra=[("office", OfficePlugin())])
    config = load_config(tmp_path, environ={}, plugins=plugins, overrides=[
        Override("defaults.driver", "fake", "test"), Override("network.mode", "office", "test")])
    driver = FakeDriver(config)
    attachment = attach(config, plugins.registries, driver)
    assert attachment.plan is not None and attachment.plan.rules == (Rule("allow", ("198.51.100.9",), "proxy"),)
    assert driver.networks[attachment.network][0].identity == "198.51.100.9"
    (refreshed,) = refresh(driver, plugins.registries, force=True)  # made with the refreshing invocation's config
    assert refreshed.network == attachment.network and refreshed.changes == {}
    with pytest.raises(ConfigError, match="office mode needs its"):
        policy_for(config._replace(network=config.network._replace(allowed_domains=["x.org"])), plugins.registries)


def test_a_network_whose_policy_plugin_is_gone_is_left_as_it_is(tmp_path: Path) -> None:
    sessions = manager(tmp_path)
    sessions.driver.networks["cci-gone"] = (NetworkPlan("gone", "", "reject", (), refresh_minutes=5), 0.0)
    (result,) = refresh(sessions.driver, sessions.plugins.registries, names=["cci-gone"])
    assert result.changes == {} and "network policy 'gone' is not available" in result.notes[0]


def test_a_saved_container_takes_the_policy_configured_when_it_is_resumed(tmp_path: Path) -> None:
    warnings: list[str] = []
    first = manager(tmp_path, ("defaults.persistent", True))
    container, _ctx = first.launch(LaunchRequest(tmp_path))
    first.finish(container)
    assert container.labels()["state"] == "saved" and container.network == "cci-restricted"

    DNS["api.example.org"] = ("198.51.100.2",)
    later = manager(tmp_path, ("defaults.persistent", True), ("network.mode", "allowlist"),
                    ("network.allowed_domains", ["api.example.org"]))
    later.driver = first.driver
    resumed, _ctx = later.reuse(tmp_path)
    assert resumed is container
    assert container.network.startswith("cci-al-") and container.labels()["network"] == "allowlist"
    later.finish(container)

    opened = manager(tmp_path, ("defaults.persistent", True), ("network.mode", "open"))
    opened.driver, opened.warn = first.driver, warnings.append
    opened.reuse(tmp_path)
    assert container.network.startswith("cci-al-") and container.labels()["network"] == "allowlist"
    assert warnings == [f"{container.name} keeps its 'allowlist' network: a saved container cannot go back to "
                        "'open'; start a new session for that"]


def test_an_attached_session_refreshes_due_plans_in_the_background(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from cci_core import session_attach

    DNS["api.example.org"] = ("198.51.100.2",)
    sessions = manager(tmp_path, ("network.mode", "allowlist"), ("network.allowed_domains", ["api.example.org"]),
                       ("network.refresh_interval_minutes", 1))
    container, ctx = sessions.launch(LaunchRequest(tmp_path, kind="run"))
    (name,) = sessions.driver.networks
    plan, _at = sessions.driver.networks[name]
    sessions.driver.networks[name] = (plan, time.time() - 61)  # made a minute ago: due
    DNS["api.example.org"] = ("198.51.100.9",)
    monkeypatch.setattr(session_attach, "SAVE_INTERVAL", 0.02)
    with session_attach.PeriodicSave(sessions, ctx, container):
        deadline = time.monotonic() + 5
        while sessions.driver.networks[name][0].addresses["api.example.org"] != ("198.51.100.9",):
            assert time.monotonic() < deadline, "not refreshed while attached"
            time.sleep(0.01)


def test_the_hosts_own_and_broadcast_addresses_are_read_from_the_kernel(tmp_path: Path) -> None:
    from cci_builtin_plugins.incus.networks import KernelAddresses, kernel_addresses

    trie = tmp_path / "fib_trie"
    trie.write_text("""Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.213.7.0/24 2 0 2
        |-- 10.213.7.0
           /24 link UNICAST
        |-- 10.213.7.1
           /32 host LOCAL
        |-- 10.213.7.255
           /32 link BROADCAST
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.0
        /8 host LOCAL
     |-- 127.0.0.1
        /32 host LOCAL
Local:
  +-- 192.0.2.0/24 2 0 2
     |-- 192.0.2.2
        /32 host LOCAL
     |-- 10.213.7.1
        /32 host LOCAL
     |-- 192.0.2.255
        /32 link BROADCAST
     |-- 198.51.100.232
        /29 host LOCAL
""")
    # a local route for a prefix (ip route add local 198.51.100.232/29 ...) makes all of it the host's
    assert kernel_addresses(trie) == KernelAddresses(
        ("10.213.7.1", "127.0.0.0/8", "127.0.0.1", "192.0.2.2", "198.51.100.232/29"), ("10.213.7.255", "192.0.2.255"))
    assert kernel_addresses(tmp_path / "missing") == KernelAddresses((), ())


def test_every_plan_rejects_multicast_and_broadcast_and_a_host_blocking_one_every_host_address() -> None:
    from ipaddress import IPv4Interface

    from cci_builtin_plugins.incus.networks import KernelAddresses, host_rules

    interfaces = [IPv4Interface("10.150.3.1/24"), IPv4Interface("203.0.113.7/28"), IPv4Interface("198.51.100.9/32")]
    kernel = KernelAddresses(("127.0.0.0/8", "127.0.0.1", "192.0.2.2", "198.51.100.232/29", "203.0.113.7"),
                             ("127.255.255.255", "192.0.2.255", "255.255.255.255"))
    broadcast = Rule("reject", ("224.0.0.0/4", "255.255.255.255", "10.150.3.255", "192.0.2.255", "203.0.113.15"),
                     "multicast and broadcast")
    assert host_rules(interfaces, kernel, block_host=False) == (broadcast,)
    assert host_rules(interfaces, kernel, block_host=True) == (broadcast, Rule(
        "reject", ("127.0.0.0/8", "10.150.3.1", "192.0.2.2", "198.51.100.9", "198.51.100.232/29", "203.0.113.7"),
        "this host"))
    # with nothing known about the host, what holds for any host still holds
    assert host_rules([], KernelAddresses(), block_host=True) == (
        Rule("reject", ("224.0.0.0/4", "255.255.255.255"), "multicast and broadcast"),
        Rule("reject", ("127.0.0.0/8",), "this host"))


class FakeACLs:
    """``/1.0/network-acls`` of a fake Incus with ETags: enough for :meth:`PolicyNetworks.update_host_rules`."""

    def __init__(self, acls: dict[str, dict[str, Any]], races: int = 0) -> None:
        from types import SimpleNamespace

        self.acls = acls
        self.races = races  # how many updates another process slips in before ours
        self.puts: list[str] = []
        self.endpoint = SimpleNamespace(socket=None)

    def get(self, path: str, action: str, **params: Any) -> Any:
        if path == "/1.0/networks":
            return [{"name": "eth0", "managed": False}, {"name": "cci-restricted", "managed": True},
                    {"name": "cci-proxy", "managed": True}, {"name": "cci-pending", "managed": True, "status": "Pending"}]
        if path == "/1.0/networks/eth0/state":
            return {"addresses": [{"family": "inet", "address": "198.51.100.9", "netmask": "24"}]}
        assert path == "/1.0/network-acls" and params == {"recursion": 1}
        return [{"name": name, **acl} for name, acl in self.acls.items()]

    def request(self, method: str, path: str, action: str, **kwargs: Any) -> Any:
        import json as json_module
        from email.message import Message

        from cci_builtin_plugins.incus.rest import Response

        name = path.rsplit("/", 1)[1]
        headers = Message()
        headers["ETag"] = str(hash(json_module.dumps(self.acls[name], sort_keys=True)))
        return Response(200, headers, json_module.dumps({"metadata": self.acls[name]}).encode())

    def call(self, method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
        import json as json_module

        from cci_builtin_plugins.incus.errors import APIError

        name = path.rsplit("/", 1)[1]
        if self.races:
            self.races -= 1
            self.acls[name]["egress"].insert(0, {"action": "allow", "destination": "192.0.2.99",
                                                 "description": "changed meanwhile", "state": "enabled"})
        if kwargs["headers"]["If-Match"] != str(hash(json_module.dumps(self.acls[name], sort_keys=True))):
            raise APIError(action, 412, "ETag doesn't match")
        self.puts.append(name)
        self.acls[name] = body


def test_the_host_rules_of_every_cci_acl_follow_the_hosts_addresses() -> None:
    from cci_builtin_plugins.incus.networks import PolicyNetworks

    private = {"action": "reject", "destination": "10.0.0.0/8", "description": "private networks", "state": "enabled"}
    old_host = {"action": "reject", "destination": "127.0.0.0/8,192.0.2.2", "description": "this host",
                "state": "enabled", "source": "", "protocol": ""}
    api = FakeACLs({
        "cci-restricted": {"egress": [private, old_host], "config": {"user.cci.policy": "restricted"}},
        "cci-proxy": {"egress": [private], "config": {"user.cci.policy": "proxy", "user.cci.block-host": "false"}},
        "theirs": {"egress": [], "config": {}},
        "cci-pending": {"egress": [private], "config": {"user.cci.policy": "restricted"}},  # its bridge: not yet
    }, races=1)
    networks = PolicyNetworks(api, None)  # type: ignore[arg-type]
    assert networks.update_host_rules() == ["cci-restricted", "cci-proxy"]
    restricted = api.acls["cci-restricted"]["egress"]
    assert restricted[0]["description"] == "changed meanwhile"  # another process's update is kept
    assert restricted[1:] == [private, {
        "action": "reject", "destination": "224.0.0.0/4,255.255.255.255,198.51.100.255", "state": "enabled",
        "description": "multicast and broadcast"}, {
        "action": "reject", "destination": "127.0.0.0/8,198.51.100.9", "description": "this host",
        "state": "enabled"}]
    assert [rule["description"] for rule in api.acls["cci-proxy"]["egress"]] == [
        "private networks", "multicast and broadcast"]
    assert api.acls["theirs"] == {"egress": [], "config": {}}
    assert api.acls["cci-pending"]["egress"] == [private]
    puts = list(api.puts)
    assert networks.update_host_rules() == []  # nothing changed since: nothing written
    assert api.puts == puts


def test_the_host_guard_starts_once_and_a_request_keeps_an_idle_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl
    import os
    import subprocess

    from cci_builtin_plugins.incus import host_guard

    monkeypatch.setattr(host_guard, "_home", lambda: tmp_path)
    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: started.append(argv))
    incus = Path("/var/lib/incus/unix.socket")
    host_guard.ensure_running(incus, "cci-test")
    assert started[0][1:] == ["-I", "-m", "cci_builtin_plugins.incus.host_guard", str(incus), "cci-test"]
    path = host_guard.lock_path(incus, "cci-test")
    assert path.parent.stat().st_mode & 0o777 == 0o700

    fd = os.open(path, os.O_RDWR)  # a guard runs: it holds the lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.utime(path, (0, 0))
    host_guard.ensure_running(incus, "cci-test")
    assert len(started) == 1  # not another one
    assert not host_guard._may_exit(fd, path)  # the request just made keeps the running one
    os.utime(path, (0, 0))
    assert host_guard._may_exit(fd, path)  # nobody asked for a long time
    os.close(fd)


def test_a_host_guard_lock_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import os

    from cci_builtin_plugins.incus import host_guard

    monkeypatch.setattr(host_guard, "_home", lambda: tmp_path)
    path = host_guard.lock_path(Path("/s"), None)
    path.parent.mkdir(mode=0o777, parents=True)
    os.chmod(path.parent, 0o777)  # a directory anyone could have made
    host_guard.ensure_running(Path("/s"), None)
    assert "cannot start the host guard" in capsys.readouterr().err
    assert not path.exists()


def test_the_host_guard_lock_lives_in_the_users_own_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not in a shared /tmp, where another local user could make the directory first and keep the guard from
    ever starting; nor in $HOME, which differs between cci processes of one user."""
    import pwd

    from cci_builtin_plugins.incus import host_guard

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert host_guard.lock_path(Path("/s"), None).parent == home / ".cci" / "run"


def test_a_bridge_another_process_is_still_creating_is_waited_for() -> None:
    from types import SimpleNamespace

    from cci_core.errors import BackendError
    from cci_builtin_plugins.incus.networks import PolicyNetworks

    answers = iter([{"status": "Pending"}, {"status": "Pending"}, {"status": "Created"}])
    reads: list[str] = []
    api = SimpleNamespace(get=lambda path, action: reads.append(path) or next(answers))
    networks = PolicyNetworks(api, None)  # type: ignore[arg-type]
    networks._wait_created("cci-x", {"status": "Pending"})
    assert reads == ["/1.0/networks/cci-x"] * 3

    stuck = SimpleNamespace(get=lambda path, action: {"status": "Pending"})
    with pytest.raises(BackendError, match="network cci-x is Pending, not ready"):
        PolicyNetworks(stuck, None)._wait_created("cci-x", {"status": "Pending"}, timeout=0.1)  # type: ignore[arg-type]


def test_a_host_guard_applies_the_rules_at_once_and_hands_over_when_cci_was_updated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from cci_builtin_plugins.incus import host_guard

    stamps = iter([(("networks.py", 1),), (("networks.py", 2),)])
    monkeypatch.setattr(host_guard, "_code_stamp", lambda: next(stamps))
    monkeypatch.setattr(host_guard, "CHECK_SECONDS", 0.01)
    applied: list[int] = []
    networks = SimpleNamespace(update_host_rules=lambda: applied.append(1) or [], list=lambda: [])
    assert host_guard.guard(networks, -1, Path("/nonexistent")) is True  # type: ignore[arg-type]
    assert applied == [1]


def test_an_acl_incus_cannot_update_leaves_the_others_updated() -> None:
    from cci_core.errors import BackendError
    from cci_builtin_plugins.incus.errors import APIError
    from cci_builtin_plugins.incus.networks import PolicyNetworks

    api = FakeACLs({name: {"egress": [], "config": {"user.cci.policy": "restricted"}}
                    for name in ("cci-restricted", "cci-proxy")})
    put = api.call

    def failing(method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
        if path.endswith("cci-restricted"):
            raise APIError(action, 500, "Failed to run: nft -f -")
        return put(method, path, action, body, **kwargs)

    api.call = failing  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="cci-restricted: Failed to run"):
        PolicyNetworks(api, None).update_host_rules()  # type: ignore[arg-type]
    assert api.puts == ["cci-proxy"]


@pytest.mark.parametrize(("kernel_local", "states_read"), [
    (("10.0.3.1", "10.214.7.1", "198.51.100.9"), []),  # the daemon's namespace: the kernel has every address
    (("192.0.2.5",), ["/1.0/networks/eth0/state"]),  # another namespace (a socket passed in): Incus's word
])
def test_a_launch_reads_no_interface_state_when_the_kernel_routes_every_bridge_here(
        monkeypatch: pytest.MonkeyPatch, kernel_local: tuple[str, ...], states_read: list[str]) -> None:
    """Each unmanaged interface's state was a request at every launch; on a local Incus whose bridges this
    process's kernel routes, the kernel's own list of addresses has them all."""
    from types import SimpleNamespace

    from cci_builtin_plugins.incus import networks as module

    read: list[str] = []

    class Local:
        endpoint = SimpleNamespace(socket="/var/lib/incus/unix.socket")

        def get(self, path: str, action: str, **params: Any) -> Any:
            read.append(path)
            if path == "/1.0/networks":
                return [{"name": "eth0", "managed": False}, {"name": "lo", "managed": False},
                        {"name": "incusbr0", "managed": True, "config": {"ipv4.address": "10.0.3.1/24"}},
                        {"name": "cci-x", "managed": True, "config": {"ipv4.address": "10.214.7.1/24"}}]
            return {"addresses": [{"family": "inet", "address": "198.51.100.9", "netmask": "24"}]}

    monkeypatch.setattr(module, "kernel_addresses", lambda: module.KernelAddresses(kernel_local, ("198.51.100.255",)))
    interfaces, kernel = module.PolicyNetworks(Local(), None)._host_addresses()  # type: ignore[arg-type]
    assert [path for path in read if path.endswith("/state")] == states_read + (
        ["/1.0/networks/lo/state"] if states_read else [])
    own = {str(rule) for rule in module.host_rules(interfaces, kernel, block_host=True)[1].destinations}
    assert {"10.0.3.1", "10.214.7.1", "198.51.100.9"} <= own  # the same rules either way
    # a launch has read its own bridge: when the kernel routes its address, Incus's list is not read at all
    read.clear()
    bridge = {"name": "cci-x", "managed": True, "config": {"ipv4.address": "10.214.7.1/24"}}
    interfaces, kernel = module.PolicyNetworks(Local(), None)._host_addresses(bridge=bridge)  # type: ignore[arg-type]
    assert read == ([] if not states_read else ["/1.0/networks", *states_read, "/1.0/networks/lo/state"])
    assert own == {str(rule) for rule in module.host_rules(interfaces, kernel, block_host=True)[1].destinations}


def test_what_the_refresh_at_an_attach_says_is_told_once_the_attach_is_over(tmp_path: Path) -> None:
    """The refresh runs while attached (a line it printed then would land in tmux's screen), so what it says is told
    after the attach; one over before the refresh's time refreshes as it ends."""
    from cci_core import session_attach

    told: list[str] = []

    class Reporting:
        warn = told.append
        driver = plugins = None

        def refresh_networks(self, report: Any = None) -> None:
            report("network cci-x: api.example.org now 198.51.100.9")

        def save(self, ctx: Any, container: Any, event: Any) -> None:
            pass

    with session_attach.PeriodicSave(Reporting(), None, None):  # type: ignore[arg-type]
        told.append("attach over")  # (the refresh may not have begun yet: what it says waits all the same)
    assert told == ["attach over", "network cci-x: api.example.org now 198.51.100.9"]


def test_the_refresh_at_an_attach_waits_until_the_screen_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not while the tool's screen comes up (Incus's CPU time for the listings slowed it), but within seconds."""
    import threading
    import time

    from cci_core import session_attach

    refreshed = threading.Event()

    class Counting:
        warn = None
        driver = plugins = None

        def refresh_networks(self, report: Any = None) -> None:
            refreshed.set()

    monkeypatch.setattr(session_attach, "FIRST_REFRESH", 0.6)
    with session_attach.PeriodicSave(Counting(), None, None):  # type: ignore[arg-type]
        started = time.monotonic()
        assert not refreshed.wait(0.3)
        assert refreshed.wait(5)
        assert time.monotonic() - started >= 0.5


def test_a_refresh_that_fails_at_an_attach_is_told_and_the_periodic_saves_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from types import SimpleNamespace

    from cci_core import session_attach

    told: list[str] = []
    saved = threading.Event()

    class Failing:
        warn = told.append
        driver = None
        plugins = SimpleNamespace(registries=None)

        def refresh_networks(self, report: Any = None) -> None:
            raise OSError(28, "No space left on device")

        def save(self, ctx: Any, container: Any, event: Any) -> None:
            saved.set()

    monkeypatch.setattr(session_attach, "SAVE_INTERVAL", 0.01)
    monkeypatch.setattr(session_attach, "FIRST_REFRESH", 0.01)
    monkeypatch.setattr("cci_core.networking.refresh", lambda driver, registries: [])
    with session_attach.PeriodicSave(Failing(), None, None):  # type: ignore[arg-type]
        assert saved.wait(5)  # the thread lives on
    assert told == ["could not refresh network policies: [Errno 28] No space left on device"]

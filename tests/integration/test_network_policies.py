"""Network policies enforced by the real Incus, probed from inside containers.

The hosts probed are this test's own (tests/network_hosts.py): "internet" hosts in
198.51.100.0/24, a private host in 10.0.0.0/8, a metadata host at 169.254.169.254
and a DNS server, each in a network namespace. No test traffic goes anywhere else.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.config import Config, Override, load_config
from cci_core.driver import Container
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_record import Kind
from cci_builtin_plugins.incus.driver import IncusDriver
from cci_builtin_plugins.network import resolver
from tests import incus_env, network_hosts
from tests.integration.conftest import CCI, RESTRICTED_NETWORK, assert_error, in_workspace, nic_network, run_cci
from tests.integration.terminal import Terminal
from tests.network_hosts import (
    DNS_SERVER,
    INTERNET_HOSTS,
    LINKS,
    METADATA_HOST,
    PRIVATE_HOST,
    HostListener,
    TestHosts,
    datagram_script,
    extra_host_address,
    probe_script,
)
from tests.workspace_config import write_trusted

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

ALLOWED = "allowed.cci-test.example"
OTHER = "other.cci-test.example"
#: waits (up to 20 s) for the DHCP lease: 'cci run' does not wait for the boot
WAIT_FOR_ADDRESS = "for i in $(seq 100); do ip -4 -o addr show eth0 | grep -q inet && break; sleep 0.2; done"


@pytest.fixture(scope="module")
def hosts() -> Iterator[TestHosts]:
    with TestHosts() as made:
        made.set_names({ALLOWED: [INTERNET_HOSTS[0]], OTHER: [INTERNET_HOSTS[1]]})
        yield made


def probes(*targets: str) -> str:
    """A script printing ``target=answer`` for each target (``blocked`` when unreachable)."""
    return "; ".join([WAIT_FOR_ADDRESS, *(f'echo "{target}=$({probe_script(target)})"' for target in targets)])


def answers(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def cci_in_test_dns(hosts: TestHosts, *args: str, env: dict[str, str], cwd: Path,
                    timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``cci ARGS`` whose host-side name resolution goes to the test DNS server."""
    return subprocess.run(hosts.host_command([str(CCI), *args]), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def workspace_with(tmp_path: Path, toml: str) -> Path:
    workspace = tmp_path / f"ws-{uuid.uuid4().hex[:6]}"
    workspace.mkdir()
    write_trusted(workspace, toml)
    return workspace


def allowlist_toml(*entries: str, refresh: int = 30) -> str:
    listed = ", ".join(f'"{entry}"' for entry in entries)
    return f'[network]\nmode = "allowlist"\nallowed_domains = [{listed}]\nrefresh_interval_minutes = {refresh}\n'


def launch(config: Config, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SessionManager, Container]:
    """A running container launched in this process; host-side names resolve through the test DNS server."""
    monkeypatch.setattr(resolver, "resolve_ipv4", lambda name: tuple(network_hosts.lookup(name)) or _fail(name))
    manager = SessionManager(config, IncusDriver(config), load_plugins(entry_points=False))
    container, _ctx = manager.launch(LaunchRequest(workspace, kind=Kind.RUN))
    return manager, container


def _fail(name: str) -> tuple[str, ...]:
    raise OSError(f"{name} did not resolve")


def config_for(workspace: Path) -> Config:
    return load_config(workspace, environ={}, overrides=[
        Override("incus.project", incus_env.PROJECT, "test"), Override("defaults.image", incus_env.IMAGE, "test"),
        Override("incus.network_nat", False, "test"),
        Override("incus.network_subnets", incus_env.NETWORK_SUBNETS, "test")])


@contextlib.contextmanager
def bridged_traffic_unfiltered() -> Iterator[None]:
    """Bridged traffic skips the host's IPv4 firewall (``bridge-nf-call-iptables=0``) inside the block."""
    switch = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not switch.exists():  # br_netfilter not loaded: that is the case already
        yield
        return
    before = switch.read_text().strip()
    switch.write_text("0")
    try:
        yield
    finally:
        switch.write_text(before)


def as_root(container: Container, script: str) -> str:
    result = container.exec(["bash", "-c", script])
    return result.stdout


# --- what each mode reaches ------------------------------------------------------------------------------


def test_restricted_reaches_the_internet_but_not_private_networks_or_metadata(
        hosts: TestHosts, cci_environ: dict[str, str], tmp_path: Path) -> None:
    result = run_cci("run", "--", "bash", "-c", probes(INTERNET_HOSTS[0], PRIVATE_HOST, METADATA_HOST),
                     env=cci_environ, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert answers(result.stdout) == {INTERNET_HOSTS[0]: INTERNET_HOSTS[0], PRIVATE_HOST: "blocked",
                                      METADATA_HOST: "blocked"}


@pytest.fixture
def host_service(hosts: TestHosts) -> Iterator[tuple[str, int]]:
    """A TCP service on this host itself (at the host's own address on the test link) answering ``host``."""
    import socketserver
    import threading

    class Answer(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"host\n")

    with socketserver.ThreadingTCPServer((network_hosts.INTERNET_GATEWAY, 0), Answer) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield network_hosts.INTERNET_GATEWAY, server.server_address[1]
        server.shutdown()


def test_no_policy_but_open_reaches_the_host_itself(
        host_service: tuple[str, int], cci_environ: dict[str, str], tmp_path: Path) -> None:
    address, port = host_service
    probe = f"{WAIT_FOR_ADDRESS}; {probe_script(address, port)}"
    for mode, expected in (("restricted", "blocked"), ("allowlist", "blocked"), ("open", "host")):
        workspace = workspace_with(tmp_path, allowlist_toml(address) if mode == "allowlist" else "")
        result = run_cci("--network", mode, "run", "--", "bash", "-c", probe, env=cci_environ, cwd=workspace)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected, mode


#: the broadcast address of the internet test hosts' link: one of this host's networks
INTERNET_BROADCAST = str(LINKS[0].network.broadcast_address)
#: prints the container's leased address (``lease=...``) and keeps its network's broadcast address in $brd
LEASE = f"{WAIT_FOR_ADDRESS}; set -- $(ip -4 -o addr show eth0 | awk '{{print $4, $6}}'); echo \"lease=$1\"; brd=$2"


@pytest.mark.parametrize("mode", ["restricted", "allowlist", "open"])
def test_multicast_and_broadcast_reach_the_host_only_in_open_mode(
        mode: str, hosts: TestHosts, cci_environ: dict[str, str], tmp_path: Path) -> None:
    workspace = workspace_with(tmp_path, allowlist_toml(INTERNET_HOSTS[2]) if mode == "allowlist" else "")
    with HostListener() as listener:  # a host service on 0.0.0.0
        targets = ("224.0.0.1", "255.255.255.255", "$brd", INTERNET_BROADCAST)
        result = run_cci("--network", mode, "run", "--", "bash", "-c",
                         f"{LEASE}; {datagram_script(listener.port, *targets)}", env=cci_environ, cwd=workspace)
        assert result.returncode == 0, result.stderr
        lease = ipaddress.ip_interface(answers(result.stdout)["lease"])
        if mode == "open":  # nothing changes: all four reach the host
            received = listener.probes_received(expected=len(targets), timeout=10)
            assert received == sorted(["224.0.0.1", "255.255.255.255", str(lease.network.broadcast_address),
                                       INTERNET_BROADCAST])
        else:
            assert listener.probes_received() == []
    # DHCP to the bridge still works: the container got its lease from the bridge of its policy
    bridges = incus_env.BRIDGE_SUBNET if mode == "open" else incus_env.NETWORK_SUBNETS
    assert lease.ip in ipaddress.ip_network(bridges), lease


@pytest.mark.parametrize("mode", ["restricted", "allowlist"])
def test_an_address_the_host_gets_while_a_container_runs_is_out_of_its_reach(
        mode: str, hosts: TestHosts, driver: IncusDriver, incus: pylxd.Client, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    public = f"198.51.100.{200 + secrets.randbelow(24)}"  # on no test host: it can only be this machine
    private = f"10.97.0.{2 + secrets.randbelow(200)}"
    routed = ipaddress.ip_network(f"198.51.100.{224 + 4 * secrets.randbelow(5)}/30")  # a local route, no address
    in_routed = str(routed.network_address + 1)
    # the allowlist lists the address the host gets later (a plan, and network, of this test's own)
    workspace = workspace_with(tmp_path, allowlist_toml(INTERNET_HOSTS[2], public) if mode == "allowlist" else "")
    manager, container = launch(config_for(workspace), workspace, monkeypatch)
    assert answers(as_root(container, LEASE))["lease"]
    with HostListener() as listener, extra_host_address(public, private, str(routed)):
        deadline = time.monotonic() + 20
        for address in (public, in_routed):
            while as_root(container, probe_script(address, listener.port, timeout=1)).strip() != "blocked":
                assert time.monotonic() < deadline, f"{address}, the host's since the launch, is still reachable"
                time.sleep(0.1)
        reached = as_root(container, probes_on(listener.port, public, private, in_routed))
        assert answers(reached) == {public: "blocked", private: "blocked", in_routed: "blocked"}
        as_root(container, datagram_script(listener.port, public, private, in_routed))
        assert listener.probes_received() == []
    assert answers(as_root(container, probes(INTERNET_HOSTS[2]))) == {INTERNET_HOSTS[2]: INTERNET_HOSTS[2]}
    if mode == "allowlist":  # this test's own plan: not left behind
        network = nic_network(incus, container.name)
        manager.finish(container, force=True, delete=True)
        driver.delete_network(network)


def probes_on(port: int, *targets: str) -> str:
    """Like :func:`probes`, on another port than the test hosts' own."""
    return "; ".join(f'echo "{target}=$({probe_script(target, port)})"' for target in targets)


def test_open_reaches_everything(hosts: TestHosts, cci_environ: dict[str, str], tmp_path: Path) -> None:
    result = run_cci("--network", "open", "run", "--", "bash", "-c",
                     probes(INTERNET_HOSTS[0], PRIVATE_HOST, METADATA_HOST), env=cci_environ, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert answers(result.stdout) == {INTERNET_HOSTS[0]: INTERNET_HOSTS[0], PRIVATE_HOST: PRIVATE_HOST,
                                      METADATA_HOST: METADATA_HOST}


def test_allowlist_reaches_only_the_listed_names_and_addresses(
        hosts: TestHosts, cci_environ: dict[str, str], tmp_path: Path) -> None:
    # the container resolves names through the test DNS server, so that one is listed too
    workspace = workspace_with(tmp_path, allowlist_toml(ALLOWED, INTERNET_HOSTS[2], DNS_SERVER))
    use_test_dns = (f"{WAIT_FOR_ADDRESS}; for i in $(seq 50); do grep -q ^nameserver /etc/resolv.conf && break;"
                    f" sleep 0.1; done; echo nameserver {DNS_SERVER} | sudo tee /etc/resolv.conf >/dev/null")
    script = probes(ALLOWED, OTHER, INTERNET_HOSTS[1], INTERNET_HOSTS[2], PRIVATE_HOST, METADATA_HOST)
    result = cci_in_test_dns(hosts, "run", "--", "bash", "-c", f"{use_test_dns}; {script}", env=cci_environ,
                             cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert answers(result.stdout) == {
        ALLOWED: INTERNET_HOSTS[0],  # resolved on the host to .2, which the ACL allows
        OTHER: "blocked", INTERNET_HOSTS[1]: "blocked",  # resolvable, but not listed
        INTERNET_HOSTS[2]: INTERNET_HOSTS[2],  # a listed address
        PRIVATE_HOST: "blocked", METADATA_HOST: "blocked",
    }


# --- root inside cannot lift the rules -------------------------------------------------------------------


def test_root_inside_cannot_flush_the_rules_or_change_its_address(
        hosts: TestHosts, driver: IncusDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = workspace_with(tmp_path, "")
    _manager, container = launch(config_for(workspace), workspace, monkeypatch)
    before = answers(as_root(container, probes(INTERNET_HOSTS[0], PRIVATE_HOST)))
    assert before == {INTERNET_HOSTS[0]: INTERNET_HOSTS[0], PRIVATE_HOST: "blocked"}

    flushed = container.exec(["nft", "flush", "ruleset"])
    assert flushed.exit_code == 0, flushed.stderr  # it may flush its own rules: cci's are not in there
    assert answers(as_root(container, probes(PRIVATE_HOST))) == {PRIVATE_HOST: "blocked"}

    # pose as another host of the bridge: what it sends from that address is dropped
    spoof = ("set -e; own=$(ip -4 -o addr show eth0 | awk '{print $4}'); gw=$(ip route | awk '/default/ {print $3}');"
             " other=${own%.*/*}.250/${own#*/}; ip addr flush dev eth0; ip addr add $other dev eth0;"
             " ip route add default via $gw")
    changed = container.exec(["bash", "-c", spoof])
    assert changed.exit_code == 0, changed.stderr
    assert answers(as_root(container, probes(INTERNET_HOSTS[0]))) == {INTERNET_HOSTS[0]: "blocked"}


def test_containers_on_one_policy_network_cannot_reach_each_other(
        hosts: TestHosts, driver: IncusDriver, incus: pylxd.Client, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first_workspace, second_workspace = workspace_with(tmp_path, ""), workspace_with(tmp_path, "")
    _manager, first = launch(config_for(first_workspace), first_workspace, monkeypatch)
    _manager, second = launch(config_for(second_workspace), second_workspace, monkeypatch)
    own_address = f"{WAIT_FOR_ADDRESS}; ip -4 -o addr show eth0 | awk '{{print $4}}' | cut -d/ -f1"
    addresses = [as_root(container, own_address).strip() for container in (first, second)]
    assert all(addresses) and addresses[0] != addresses[1]
    # the same bridge (so only the bridge itself can keep them apart), and the internet still works
    assert nic_network(incus, first.name) == nic_network(incus, second.name)
    assert answers(as_root(first, probes(INTERNET_HOSTS[0]))) == {INTERNET_HOSTS[0]: INTERNET_HOSTS[0]}
    ping = f"ping -c 2 -W 1 {addresses[1]} >/dev/null 2>&1 && echo reached || echo blocked"
    assert as_root(first, ping).strip() == "blocked"
    # without br_netfilter (stock kernels without Docker) the ACL never sees bridged traffic: still blocked
    with bridged_traffic_unfiltered():
        assert as_root(first, ping).strip() == "blocked"


# --- allowlist addresses: cache and refresh --------------------------------------------------------------


def test_a_dns_outage_keeps_the_addresses_and_a_refresh_follows_a_change(
        hosts: TestHosts, driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    marker = f"refresh-{uuid.uuid4().hex[:8]}.cci-test.example"  # a network of this test's own
    hosts.set_names({ALLOWED: [INTERNET_HOSTS[0]], OTHER: [INTERNET_HOSTS[1]], marker: [INTERNET_HOSTS[2]]})
    workspace = workspace_with(tmp_path, allowlist_toml(ALLOWED, marker))
    manager, container = launch(config_for(workspace), workspace, monkeypatch)
    (network,) = [item for item in driver.policy_networks() if container.name in item.used_by]
    check = probes(INTERNET_HOSTS[0], INTERNET_HOSTS[1])
    assert answers(as_root(container, check)) == {INTERNET_HOSTS[0]: INTERNET_HOSTS[0],
                                                  INTERNET_HOSTS[1]: "blocked"}

    environ = cci_environ  # the same HOME as this process: the same address cache
    hosts.stop_dns()
    result = cci_in_test_dns(hosts, "network", "refresh", network.name, env=environ, cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert f"{network.name}: addresses unchanged" in result.stdout
    assert f"could not resolve {ALLOWED}" in result.stderr and "keeping its addresses" in result.stderr
    assert answers(as_root(container, check)) == {INTERNET_HOSTS[0]: INTERNET_HOSTS[0],
                                                  INTERNET_HOSTS[1]: "blocked"}

    hosts.start_dns()
    hosts.set_names({ALLOWED: [INTERNET_HOSTS[1]], marker: [INTERNET_HOSTS[2]]})  # the name moved
    result = cci_in_test_dns(hosts, "network", "refresh", network.name, env=environ, cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert f"{network.name}: {ALLOWED}: {INTERNET_HOSTS[0]} -> {INTERNET_HOSTS[1]}" in result.stdout
    assert answers(as_root(container, check)) == {INTERNET_HOSTS[0]: "blocked", INTERNET_HOSTS[1]: INTERNET_HOSTS[1]}

    shown = json.loads(run_cci("network", "show", container.name, "--format", "json", env=environ).stdout)
    assert shown["addresses"][ALLOWED] == [INTERNET_HOSTS[1]] and shown["used_by"] == [container.name]
    hosts.set_names({ALLOWED: [INTERNET_HOSTS[0]], OTHER: [INTERNET_HOSTS[1]]})
    manager.finish(container, force=True, delete=True)
    driver.delete_network(network.name)  # this test's own plan: not left behind


# --- visibility, bad input, concurrency ------------------------------------------------------------------


def test_list_and_show_tell_each_containers_policy(
        hosts: TestHosts, driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = workspace_with(tmp_path, "")
    _manager, container = launch(config_for(workspace), workspace, monkeypatch)
    listing = json.loads(run_cci("list", "--format", "json", env=cci_environ).stdout)["containers"]
    (row,) = [row for row in listing if row["name"] == container.name]
    assert row["network"] == "restricted"
    table = run_cci("list", env=cci_environ).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "STATUS", "MODE", "NETWORK"]

    shown = run_cci("network", "show", container.name, env=cci_environ)
    assert shown.returncode == 0, shown.stderr
    assert "policy   restricted" in shown.stdout and container.name in shown.stdout
    assert "reject  10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 169.254.0.0/16 100.64.0.0/10" in shown.stdout
    assert "reject  ::/0" in shown.stdout
    document = json.loads(run_cci("network", "show", "--format", "json", env=cci_environ, cwd=workspace).stdout)
    assert (document["policy"], document["default"], document["network"]) == ("restricted", "allow", RESTRICTED_NETWORK)
    assert_error(run_cci("network", "show", "no-such-container", env=cci_environ), 5, "no container named")
    networks = {item["network"]: item for item in json.loads(run_cci("network", "list", "--format", "json",
                                                                      env=cci_environ).stdout)}
    assert container.name in networks[RESTRICTED_NETWORK]["used_by"]
    assert networks[RESTRICTED_NETWORK]["rules"][-1]["description"] == "this host"
    assert_error(run_cci("network", "delete", RESTRICTED_NETWORK, env=cci_environ), 2,
                 f"network {RESTRICTED_NETWORK} is used by", container.name)


@pytest.mark.parametrize(("toml", "fragment"), [
    (allowlist_toml("not a domain"), "'not a domain' is neither a domain name nor an IPv4 address"),
    ('[network]\nmode = "allowlist"\n', "allowlist mode needs at least one entry in allowed_domains"),
    ('[network]\nallowed_domains = "github.com"\n', "expected a list of strings"),
    ('[network]\nmode = "wide-open"\n', "available: allowlist, open, proxy, restricted"),
])
def test_bad_network_settings_fail_before_anything_is_launched(
        cci_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client, tmp_path: Path, toml: str,
        fragment: str) -> None:
    workspace = workspace_with(tmp_path, toml)
    before = {item.name for item in driver.policy_networks()}
    result = run_cci("run", "--", "true", env=cci_environ, cwd=workspace)
    assert result.returncode in (2, 3)
    assert_error(result, result.returncode, fragment)
    assert in_workspace(incus, workspace) == []
    assert {item.name for item in driver.policy_networks()} == before


def test_two_launches_make_one_new_network_at_once(
        hosts: TestHosts, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path,
) -> None:
    unique = f"198.51.100.{100 + uuid.uuid4().int % 100}"  # a plan (and network) no other test has
    workspace = workspace_with(tmp_path, allowlist_toml(INTERNET_HOSTS[2], unique))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_cci("run", "--", "bash", "-c", probes(INTERNET_HOSTS[2]),
                                                  env=cci_environ, cwd=workspace), range(2)))
    for result in results:
        assert result.returncode == 0, result.stderr
        assert answers(result.stdout) == {INTERNET_HOSTS[2]: INTERNET_HOSTS[2]}
    assert in_workspace(incus, workspace) == []  # (their detached ends have deleted them)
    made = [item for item in driver.policy_networks() if unique in item.plan.settings.get("allowed_domains", [])]
    assert len(made) == 1 and made[0].used_by == ()
    deleted = run_cci("network", "delete", made[0].name, env=cci_environ)
    assert deleted.returncode == 0, deleted.stderr
    assert made[0].name not in {item.name for item in driver.policy_networks()}


def network_acls(incus: pylxd.Client) -> set[str]:
    """The network ACLs of the test project, as Incus lists them (their URLs)."""
    return set(incus.api["network-acls"].get().json()["metadata"] or [])


def test_a_network_that_cannot_be_made_leaves_nothing_behind(
        driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path) -> None:
    unique = f"198.51.100.{100 + uuid.uuid4().int % 100}"
    workspace = workspace_with(tmp_path, allowlist_toml(unique))
    acls_before = network_acls(incus)
    # the only /24 of this range is the test bridge's own: no room for another network
    full = {**cci_environ, "CCI_INCUS_NETWORK_SUBNETS": incus_env.BRIDGE_SUBNET}
    result = run_cci("run", "--", "true", env=full, cwd=workspace)
    assert_error(result, 4, f"no free /24 left in incus.network_subnets ({incus_env.BRIDGE_SUBNET})")
    assert network_acls(incus) == acls_before
    assert in_workspace(incus, workspace) == []


def test_attaching_refreshes_a_due_plan(
        hosts: TestHosts, driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, terminal: Terminal) -> None:
    marker = f"attach-{uuid.uuid4().hex[:8]}.cci-test.example"
    hosts.set_names({ALLOWED: [INTERNET_HOSTS[0]], marker: [INTERNET_HOSTS[2]]})
    workspace = workspace_with(tmp_path, allowlist_toml(ALLOWED, marker, refresh=1))
    manager, container = launch(config_for(workspace), workspace, monkeypatch)
    (network,) = [item for item in driver.policy_networks() if container.name in item.used_by]
    # the plan was made two minutes ago, and the name has moved since
    subprocess.run(["incus", "network", "acl", "set", network.name,
                    f"user.cci.refreshed-at={network.refreshed_at - 120:.0f}"], check=True)
    hosts.set_names({ALLOWED: [INTERNET_HOSTS[1]], marker: [INTERNET_HOSTS[2]]})

    attach = shlex.join(hosts.host_command([str(CCI), "attach", container.name]))
    terminal.start("one", attach, {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("one", f"@{container.name}:/workspace$")
    deadline = time.monotonic() + 30  # (refreshed while the terminal comes up, not before)
    while True:
        (refreshed,) = [item for item in driver.policy_networks() if item.name == network.name]
        if refreshed.refreshed_at > network.refreshed_at or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert refreshed.plan.addresses[ALLOWED] == (INTERNET_HOSTS[1],)
    assert refreshed.refreshed_at > network.refreshed_at
    assert answers(as_root(container, probes(INTERNET_HOSTS[0], INTERNET_HOSTS[1]))) == {
        INTERNET_HOSTS[0]: "blocked", INTERNET_HOSTS[1]: INTERNET_HOSTS[1]}
    terminal.keys("one", "C-b", "d")
    terminal.wait_for("one", "CCI-EXITED-0")
    hosts.set_names({ALLOWED: [INTERNET_HOSTS[0]], OTHER: [INTERNET_HOSTS[1]]})
    manager.finish(container, force=True, delete=True)
    driver.delete_network(network.name)


def test_bridge_settings_changed_by_hand_are_set_back_at_the_next_launch(
        driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path) -> None:
    assert run_cci("run", "--", "true", env=cci_environ, cwd=tmp_path).returncode == 0  # the bridge exists
    # (its container gone first: Incus fails a bridge change while it takes a NIC of the bridge down)
    assert in_workspace(incus, tmp_path) == []
    # (NAT stays off: test bridges never get it, not even for a moment)
    subprocess.run(["incus", "network", "set", RESTRICTED_NETWORK, "ipv6.address=fd42:cc1:0:1::1/64",
                    "security.acls.default.egress.action=reject"], check=True)
    result = run_cci("run", "--", "true", env=cci_environ, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = incus.networks.get(RESTRICTED_NETWORK).config
    assert (config["ipv6.address"], config["ipv4.nat"], config["security.acls.default.egress.action"]) == (
        "none", "false", "allow")


def test_a_config_written_from_inside_the_container_is_refused(
        driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path) -> None:
    escape = 'printf "[network]\\nmode = \\"open\\"\\n" | sudo tee /workspace/.cci.toml >/dev/null'
    written = run_cci("run", "--", "bash", "-c", escape, env=cci_environ, cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / ".cci.toml").read_text() == '[network]\nmode = "open"\n'
    refused = run_cci("run", "--", "true", env=cci_environ, cwd=tmp_path)
    assert_error(refused, 2, f"{tmp_path}/.cci.toml is not trusted", "cci config trust")
    assert in_workspace(incus, tmp_path) == []

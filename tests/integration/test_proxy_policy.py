"""The proxy policy's containers on the real Incus (issue 16): the proxy container a plan gets, kept and reused,
no session of cci's, stopped when unused and started again, deleted with its network; agents with no NIC
behind it; its request log through ``cci network log``; a proxy that cannot come up.

The hosts are the test namespaces (tests/network_hosts.py): the web server on port 8080 of 198.51.100.2-4,
named through the proxy's own ``[network] hosts`` map (this module's names only: its plan, network and
proxy are its own). Requests are made inside with bash alone (the test image has no curl).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cci_core.config import Config, NetworkConfig
from cci_builtin_plugins.incus.driver import IncusDriver
from cci_builtin_plugins.incus.proxy import proxy_name
from cci_builtin_plugins.network.restricted import RestrictedPolicy
from tests import incus_env
from tests.integration.conftest import assert_error, run_cci, unique_name
from tests.network_hosts import INTERNET_HOSTS, LOCK_FILE, WEB_PORT, TestHosts
from tests.workspace_config import write_trusted

pytestmark = pytest.mark.incus

PROXY_IMAGE = os.environ.get("CCI_TEST_PROXY_IMAGE", "cci-proxy")
ALLOWED, DENIED, UNLISTED = "h3.ccit.test", "denied.h3.ccit.test", "h3-unlisted.ccit.test"
HOST_MAP = {ALLOWED: INTERNET_HOSTS[0], DENIED: INTERNET_HOSTS[1], UNLISTED: INTERNET_HOSTS[2]}
ALLOWED_DOMAINS = [f"{ALLOWED}:{WEB_PORT}", f".{ALLOWED}:{WEB_PORT}"]
DENIED_DOMAINS = [f"{DENIED}:{WEB_PORT}"]
#: how long the test hosts of another test module (one set per machine) may keep this one waiting
HOSTS_WAIT_SECONDS = 900


def toml(image: str = PROXY_IMAGE, hosts: dict[str, str] = HOST_MAP) -> str:
    host_map = ", ".join(f'"{name}" = "{address}"' for name, address in hosts.items())
    return (f'[network]\nmode = "proxy"\nallowed_domains = {json.dumps(ALLOWED_DOMAINS)}\n'
            f'denied_domains = {json.dumps(DENIED_DOMAINS)}\nhosts = {{ {host_map} }}\nproxy_image = "{image}"\n')


def network_of(image: str = PROXY_IMAGE, hosts: dict[str, str] = HOST_MAP) -> str:
    """The bridge of the plan :func:`toml` gives (NAT off, as in every test)."""
    from cci_builtin_plugins.incus.networks import network_name
    from cci_builtin_plugins.network.proxy import ProxyPolicy

    plan = ProxyPolicy(presets={}).plan(NetworkConfig(mode="proxy", allowed_domains=ALLOWED_DOMAINS,
                                                      denied_domains=DENIED_DOMAINS, hosts=hosts,
                                                      proxy_image=image))
    assert plan is not None
    return network_name(plan, nat=False)


@pytest.fixture(scope="module")
def hosts() -> Iterator[TestHosts]:
    """The test hosts, once no other test module holds them (they are one set per machine)."""
    deadline = time.monotonic() + HOSTS_WAIT_SECONDS
    while True:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, f"the test hosts stayed taken ({LOCK_FILE}) for {HOSTS_WAIT_SECONDS} s"
            time.sleep(0.5)  # polling another process's lock, with a deadline
        finally:
            os.close(fd)
    with TestHosts() as made:
        yield made


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    made = tmp_path / "ws"
    made.mkdir()
    write_trusted(made, toml())
    return made


def request_script() -> str:
    """Requests through the proxy (``NAME=status line``), a direct connection, what the container has."""
    request = ('req() { if exec 3<>/dev/tcp/127.0.0.1/3128; then '
               'printf "GET http://%s:%s/h3 HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n" "$1" "$2" "$1" >&3; '
               'echo "$1=$(timeout 10 head -n 1 <&3 | tr -d "\\r")"; exec 3>&-; else echo "$1=no proxy"; fi; }')
    lines = [request, *(f"req {name} {WEB_PORT}" for name in (ALLOWED, DENIED, UNLISTED)),
             f'echo "direct=$(timeout 3 bash -c "exec 3<>/dev/tcp/{INTERNET_HOSTS[0]}/{WEB_PORT}" 2>/dev/null '
             '&& echo open || echo failed)"',
             'echo "interfaces=$(ls /sys/class/net | tr "\\n" " ")"',
             'echo "https_proxy=$HTTPS_PROXY"',
             'echo "ca=$(grep -c "BEGIN CERTIFICATE" /usr/local/share/ca-certificates/cci-proxy.crt)"',
             'echo "bundle=$SSL_CERT_FILE:$(tail -n 1 /etc/cci/ca-certificates.crt)"']
    return "\n".join(lines)


def values(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def proxies_of(driver: IncusDriver, network: str) -> list[tuple[str, str]]:
    """(name, created) of every container labelled as the proxy of ``network``."""
    return [(info.name, info.created) for info in driver.list_containers()
            if info.labels.get("kind") == "proxy" and info.labels.get("proxy-network") == network]


def wait_status(driver: IncusDriver, name: str, status: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while driver.get(name).status() != status:
        assert time.monotonic() < deadline, f"{name} did not become {status} in {timeout:.0f} s"
        time.sleep(0.5)


def wait_sessions_gone(driver: IncusDriver, workspace: Path, timeout: float = 90) -> None:
    """``cci run`` returns before its container is gone (a detached cleanup deletes it): wait for that."""
    deadline = time.monotonic() + timeout
    while [info.name for info in driver.list_containers() if info.labels.get("workspace") == str(workspace.resolve())]:
        assert time.monotonic() < deadline, f"the sessions of {workspace} were not gone in {timeout:.0f} s"
        time.sleep(0.2)


def test_a_proxy_plans_containers_reach_only_what_its_rules_allow_through_one_kept_proxy(
        hosts: TestHosts, cci_environ: dict[str, str], driver: IncusDriver, config: Config, workspace: Path) -> None:
    env, network = cci_environ, network_of()
    proxy = proxy_name(network)
    try:
        result = run_cci("run", "--", "bash", "-c", request_script(), env=env, cwd=workspace, timeout=300)
        assert result.returncode == 0, result.stderr
        seen = values(result.stdout)
        assert seen[ALLOWED] == "HTTP/1.1 200 OK", result.stdout
        assert seen[DENIED].startswith("HTTP/1.1 403") and seen[UNLISTED].startswith("HTTP/1.1 403"), result.stdout
        assert seen["direct"] == "failed"  # no NIC: nothing but the proxy
        assert seen["interfaces"].split() == ["lo"]
        assert seen["https_proxy"] == "http://127.0.0.1:3128" and seen["ca"] == "1"
        assert seen["bundle"] == "/etc/cci/ca-certificates.crt:-----END CERTIFICATE-----"

        # the proxy is no session: kept after the run, not listed, reused by the next run
        (made,) = proxies_of(driver, network)
        assert made[0] == proxy
        listed = run_cci("list", "--format", "json", env=env)
        assert listed.returncode == 0 and proxy not in listed.stdout
        second = run_cci("run", "--", "true", env=env, cwd=workspace, timeout=120)
        assert second.returncode == 0, second.stderr
        assert proxies_of(driver, network) == [made]

        # every request in the log, with the rule that decided it (the workspace's proxy: no NAME needed)
        logged = run_cci("network", "log", "--format", "json", env=env, cwd=workspace)
        assert logged.returncode == 0, logged.stderr
        records = {record["host"]: record for record in map(json.loads, logged.stdout.splitlines())}
        assert records[ALLOWED]["allowed"] is True and records[ALLOWED]["port"] == WEB_PORT
        assert records[ALLOWED]["rule"] == f"allow {ALLOWED}:{WEB_PORT} (allowed_domains)"
        assert records[ALLOWED]["status"] == 200 and records[ALLOWED]["method"] == "GET"
        assert records[DENIED]["allowed"] is False and records[DENIED]["status"] == 403
        assert records[DENIED]["rule"] == f"deny {DENIED}:{WEB_PORT} (denied_domains)"
        assert records[UNLISTED]["allowed"] is False and records[UNLISTED]["rule"] == "no rule"
        assert set(records) == {ALLOWED, DENIED, UNLISTED}  # cci's own readiness checks are not requests
        denied = run_cci("network", "log", network, "--denied", env=env)
        assert denied.returncode == 0, denied.stderr
        lines = denied.stdout.splitlines()
        assert len(lines) == 2 and all(" DENIED " in line for line in lines)
        assert any(f"{DENIED}:{WEB_PORT} 403 [deny {DENIED}:{WEB_PORT} (denied_domains)]" in line for line in lines)

        wait_sessions_gone(driver, workspace)  # (their containers used the network until then)
        shown = run_cci("network", "list", "--format", "json", env=env)
        (entry,) = [item for item in json.loads(shown.stdout) if item["network"] == network]
        assert entry["used_by"] == [] and entry["proxy"]["container"] == proxy
        assert {(rule["action"], rule["pattern"], rule["source"]) for rule in entry["proxy"]["rules"]} >= {
            ("allow", ALLOWED, "allowed_domains"), ("deny", DENIED, "denied_domains")}

        # unused, it stops; the next container on the plan starts it again, and has no NIC
        wait_status(driver, proxy, "stopped")
        name = unique_name()
        launched = run_cci("container", "launch", incus_env.IMAGE, name, env=env, cwd=workspace)
        assert launched.returncode == 0, launched.stderr
        assert driver.get(proxy).status() == "running"
        devices = driver.api.get(f"/1.0/instances/{name}", "reading")["expanded_devices"]
        assert [device["type"] for device in devices.values() if device["type"] in ("nic", "none")] == ["none"]
        assert devices["cci-proxy"]["bind"] == "instance"
        used = json.loads(run_cci("network", "list", "--format", "json", env=env).stdout)
        assert [item["used_by"] for item in used if item["network"] == network] == [[name]]
        assert proxies_of(driver, network) == [made]

        # configured again for a plan without proxy (a reuse under another mode): its NIC back, the proxy gone
        restricted = driver.ensure_network(RestrictedPolicy(config).plan(config.network))
        container = driver.get(name)
        container.stop(force=True)
        container.configure({}, [], restricted)
        moved = driver.api.get(f"/1.0/instances/{name}", "reading")
        assert "cci-proxy" not in moved["expanded_devices"]
        assert [device.get("network") for device in moved["expanded_devices"].values()
                if device["type"] == "nic"] == [restricted]
        assert not [key for key in moved["config"] if key.startswith("environment.")]
    finally:
        run_cci("container", "delete", "--force", name, env=env) if "name" in locals() else None
        deleted = run_cci("network", "delete", network, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert proxies_of(driver, network) == []
    assert network not in [item.name for item in driver.policy_networks()]


def test_a_proxy_that_cannot_come_up_is_one_line_and_leaves_no_container(
        cci_environ: dict[str, str], driver: IncusDriver, tmp_path: Path) -> None:
    hosts = {f"broken-{uuid.uuid4().hex[:8]}.ccit.test": INTERNET_HOSTS[0]}  # a plan, a network of this test's own
    workspace = tmp_path / "ws"
    workspace.mkdir()
    write_trusted(workspace, toml(incus_env.IMAGE, hosts))  # an image without squid
    network = network_of(incus_env.IMAGE, hosts)
    try:
        result = run_cci("run", "--", "true", env=cci_environ, cwd=workspace, timeout=180)
        assert_error(result, 4, f"the proxy {proxy_name(network)} did not come up",
                     f"its image {incus_env.IMAGE!r} has no squid")
        assert proxies_of(driver, network) == []
        assert not [info for info in driver.list_containers() if info.labels.get("workspace") == str(workspace)]
    finally:
        run_cci("network", "delete", network, env=cci_environ)

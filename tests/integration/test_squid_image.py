"""The proxy image with cci's squid configuration, in a real container: it parses, starts, denies, logs, substitutes.

The end-to-end path (agent containers without a NIC, the Incus proxy devices) is test_proxy_egress.py's;
this one talks to squid inside its own container, over its loopback, and reaches nothing outside it
(the one server it opens TLS to is an openssl s_server in the same container).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cci_builtin_plugins.images import proxy_image
from cci_builtin_plugins.incus import proxy_log, squid
from cci_core.api import HostRule, ProxySpec, RequestRecord, Substitution
from tests import incus_env
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.incus

ALLOWED = HostRule("allow", "allowed.test", (8443,), "allowed_domains")
DENIED = HostRule("deny", ".denied.test", (), "denied_domains")
OTHER = HostRule("allow", "other.test", (8443,), "allowed_domains")
#: an allowed name at a public address (nothing answers there: the proxy's network is its own, with no route)
PUBLIC = HostRule("allow", "public.test", (8443,), "allowed_domains")
PUBLIC_ADDRESS = "198.51.100.9"
#: what the proxy resolves itself: the allowed name is its own loopback (where the test's TLS server listens)
HOSTS = {"allowed.test": "127.0.0.1", "other.test": "127.0.0.1", "public.test": PUBLIC_ADDRESS}
SECRET = Substitution("H2_TEST_TOKEN", "cci-placeholder-h2test0123", "real-value-%s-\"q\"", ("allowed.test",),
                      ("Authorization: Bearer {}", "X-Api-Key: {}"))
OTHER_SECRET = Substitution("H2_OTHER_TOKEN", "cci-placeholder-h2other456", "other-real-value", ("other.test",),
                            ("Authorization: Bearer {}",))


def incus(*args: str, input: bytes | None = None, check: bool = True, timeout: float = 60) -> str:
    result = subprocess.run(["incus", "--project", incus_env.PROJECT, *args], input=input, capture_output=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"incus {' '.join(args)}: {result.returncode} {result.stderr.decode()!r}")
    return result.stdout.decode(errors="replace")


def run(name: str, script: str, *, check: bool = True, timeout: float = 60) -> str:
    return incus("exec", name, "--", "bash", "-c", script, check=check, timeout=timeout)


def wait_for(what: str, probe, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def listening(name: str) -> bool:
    """Whether something listens on 127.0.0.1:3128 in the container (0100007F:0C38, state 0A)."""
    table = run(name, "cat /proc/net/tcp", check=False)
    return any(line.split()[1:2] == ["0100007F:0C38"] and line.split()[3] == "0A"
               for line in table.splitlines()[1:] if len(line.split()) > 3)


def records(name: str) -> list[RequestRecord]:
    text = run(name, f"cat {squid.ACCESS_LOG} 2>/dev/null || true")
    return [record for record in map(proxy_log.parse_line, text.splitlines()) if record is not None]


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[str]:
    """A container of the proxy image with the rendered configuration pushed before its first start, running."""
    images = incus("image", "list", "--format", "csv", "--columns", "l")
    if not any(incus_env.PROXY_IMAGE in line.split(",")[0].split() for line in images.splitlines()):
        pytest.fail(f"the proxy image {incus_env.PROXY_IMAGE} is missing: run 'sudo scripts/incus-test-env'",
                    pytrace=False)
    name = unique_name()
    incus("init", incus_env.PROXY_IMAGE, name)
    try:
        server_cert = tmp_path / "server.pem"
        subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-noenc", "-days", "2",
                        "-subj", "/CN=allowed.test", "-addext", "subjectAltName=DNS:allowed.test,DNS:other.test",
                        "-keyout", str(tmp_path / "server.key"), "-out", str(server_cert)], check=True,
                       capture_output=True, timeout=60)
        files = squid.render(ProxySpec((ALLOWED, DENIED, OTHER, PUBLIC), HOSTS), (SECRET, OTHER_SECRET),
                             trust_ca=server_cert.read_text())
        for path, (content, mode) in files.items():
            incus("file", "push", "--create-dirs", "--uid", "0", "--gid", str(squid.PROXY_GID), "--mode",
                  f"{mode:o}", "-", f"{name}{path}", input=content)
        for file in ("server.pem", "server.key"):
            incus("file", "push", "--mode", "600", str(tmp_path / file), f"{name}/root/{file}")
        incus("start", name)
        wait_for("squid listening on 127.0.0.1:3128", lambda: listening(name))
        yield name
    finally:
        incus("delete", "--force", name, check=False)


def test_squid_parses_the_configuration_and_makes_its_ca_in_the_container(proxy: str) -> None:
    parsed = subprocess.run(["incus", "--project", incus_env.PROJECT, "exec", proxy, "--", "squid", "-k", "parse"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert parsed.returncode == 0, parsed.stderr
    problems = [line for line in parsed.stderr.splitlines() if any(word in line for word in ("ERROR", "FATAL",
                                                                                          "WARNING", "UNRECOGNIZED"))]
    assert [line.split("| ", 1)[-1] for line in problems] == ["WARNING: HTTP requires the use of Via"], problems
    assert f"Processing Configuration File: {squid.SECRETS_CONF}" in parsed.stderr
    ca = run(proxy, f"openssl x509 -in {squid.CA_CERT} -noout -text; stat -c '%a %U %G' {squid.CA_KEY}")
    assert "CA:TRUE" in ca and "Certificate Sign, CRL Sign" in ca
    assert ca.splitlines()[-1] == "640 root proxy"


def test_requests_no_rule_allows_or_a_rule_denies_are_refused_and_logged(proxy: str) -> None:
    get = "exec 3<>/dev/tcp/127.0.0.1/3128; printf 'GET http://%s/ HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n' {0} {0} >&3; " \
          "head -n 1 <&3"
    assert run(proxy, get.format("nowhere.test")).startswith("HTTP/1.1 403 ")
    assert run(proxy, get.format("www.denied.test")).startswith("HTTP/1.1 403 ")
    # a refused CONNECT is answered with the 403 itself, before any TLS (on the ssl-bump port squid would accept it
    # and refuse inside TLS, with a certificate strict clients reject), its body naming cci's policy
    connect = run(proxy, "exec 3<>/dev/tcp/127.0.0.1/3128; printf 'CONNECT nowhere.test:443 HTTP/1.1\\r\\n"
                         "Host: nowhere.test:443\\r\\nConnection: close\\r\\n\\r\\n' >&3; timeout 20 head -c 4096 <&3",
                  check=False)
    assert connect.startswith("HTTP/1.1 403 "), connect
    assert "the network policy of this container does not allow CONNECT nowhere.test:443" in connect, connect
    found = wait_for("three records", lambda: (lambda got: got if len(got) >= 3 else None)(records(proxy)))
    by_host = {(record.method, record.host): record for record in found}
    assert not by_host["GET", "nowhere.test"].allowed and by_host["GET", "nowhere.test"].rule == proxy_log.NO_RULE
    denied = by_host["GET", "www.denied.test"]
    assert not denied.allowed and denied.rule == "deny .denied.test (denied_domains)" and denied.status == 403
    tunnel = by_host["CONNECT", "nowhere.test"]
    assert not tunnel.allowed and tunnel.port == 443 and tunnel.status == 403 and tunnel.rule == proxy_log.NO_RULE
    assert len(found) == 3  # squid's extra line of the refused tunnel is no record


def test_a_name_rule_does_not_allow_a_request_for_its_address(proxy: str) -> None:
    """squid looked the requested address's name up (the hosts map here; elsewhere a PTR record, which the
    address's owner writes) and allowed the bare address by the name's rule."""
    head = "exec 3<>/dev/tcp/127.0.0.1/3128; printf '{0} HTTP/1.1\\r\\nHost: {1}\\r\\nConnection: close" \
           "\\r\\n\\r\\n' >&3; timeout 20 head -n 1 <&3"
    target = f"{PUBLIC_ADDRESS}:8443"
    assert run(proxy, head.format(f"GET http://{target}/", target)).startswith("HTTP/1.1 403 ")
    assert run(proxy, head.format(f"CONNECT {target}", target)).startswith("HTTP/1.1 403 ")
    found = wait_for("two records", lambda: (lambda got: got if len(got) >= 2 else None)(records(proxy)))
    assert [(record.method, record.host, record.allowed, record.rule) for record in found] == [
        ("GET", PUBLIC_ADDRESS, False, proxy_log.NO_RULE), ("CONNECT", PUBLIC_ADDRESS, False, proxy_log.NO_RULE)]


def test_a_tls_server_name_other_than_the_connect_s_is_cut(proxy: str) -> None:
    out = run(proxy, "echo | timeout 20 openssl s_client -proxy 127.0.0.1:3128 -connect allowed.test:8443 "
                     f"-servername other.test -CAfile {squid.CA_CERT} 2>&1", check=False)
    assert "Server certificate" not in out and "BEGIN CERTIFICATE" not in out, out  # no TLS session at all
    (record,) = wait_for("the record", lambda: records(proxy))
    assert record.method == "CONNECT" and (record.host, record.sni) == ("allowed.test", "other.test")
    assert not record.allowed and record.rule == proxy_log.SNI_MISMATCH and record.status == 0  # what the client saw


def serve_once(proxy: str) -> None:
    """An openssl s_server on 127.0.0.1:8443 in the container, writing what it receives to /root/received.txt."""
    run(proxy, "cd /root && rm -f received.txt && (sleep 60 | openssl s_server -quiet -naccept 1 -accept "
               "127.0.0.1:8443 -cert server.pem -key server.key >/root/received.txt 2>&1 &)")
    wait_for("the test server", lambda: any(line.split()[1:2] == ["0100007F:20FB"] for line in run(
        proxy, "cat /proc/net/tcp").splitlines()[1:]))


def send(proxy: str, host: str, server_name: str, headers: str) -> None:
    """One HTTPS request through squid: CONNECT to ``host``, TLS with ``server_name``, then GET with ``headers``."""
    request = f"GET /x HTTP/1.1\\r\\nHost: {host}:8443\\r\\n{headers}X-End: 1\\r\\n\\r\\n"
    run(proxy, f"printf '{request}' | timeout 5 openssl s_client -quiet -proxy 127.0.0.1:3128 -connect "
               f"{server_name}:8443 -servername {server_name} -CAfile {squid.CA_CERT} >/dev/null 2>&1", check=False)


def test_a_placeholder_becomes_the_real_value_for_its_host_only(proxy: str) -> None:
    serve_once(proxy)
    send(proxy, "allowed.test", "allowed.test", "Authorization: Bearer {p}\\r\\nX-Api-Key: {p}x\\r\\n"
                                                "X-Other: {p}\\r\\n".format(p=SECRET.placeholder))
    received = wait_for("the request at the server", lambda: (lambda text: text if "X-End" in text else None)(
        run(proxy, "cat /root/received.txt")), timeout=20)
    headers = dict(line.split(": ", 1) for line in received.splitlines() if ": " in line)
    assert headers["Authorization"] == f"Bearer {SECRET.value}"
    assert headers["X-Api-Key"] == f"{SECRET.placeholder}x"  # not the whole value: left as it is
    assert headers["X-Other"] == SECRET.placeholder
    assert SECRET.value not in run(proxy, f"cat {squid.SQUID_CONF} {squid.ACCESS_LOG} {squid.CACHE_LOG}")
    get = next(record for record in wait_for("the record", lambda: records(proxy)) if record.method == "GET")
    assert get.allowed and get.rule == "allow allowed.test:8443 (allowed_domains)" and get.sni == "allowed.test"


def test_a_placeholder_for_another_host_inside_a_tunnel_stays_a_placeholder(proxy: str) -> None:
    serve_once(proxy)
    # TLS to allowed.test (whose secret makes it intercepted), asking for other.test with other.test's placeholder
    send(proxy, "other.test", "allowed.test", f"Authorization: Bearer {OTHER_SECRET.placeholder}\\r\\n")
    get = wait_for("the request's record", lambda: next((record for record in records(proxy)
                                                          if record.method == "GET"), None), timeout=20)
    received = run(proxy, "cat /root/received.txt")
    assert OTHER_SECRET.value not in received and SECRET.value not in received, received
    assert (get.host, get.sni, get.allowed, get.rule) == ("other.test", "allowed.test", False, proxy_log.SNI_MISMATCH)


def test_a_new_configuration_applies_at_a_reconfigure(proxy: str) -> None:
    get = "exec 3<>/dev/tcp/127.0.0.1/3128; printf 'GET http://later.test:8443/ HTTP/1.1\\r\\nHost: later.test:8443" \
          "\\r\\n\\r\\n' >&3; head -n 1 <&3"
    assert run(proxy, get).startswith("HTTP/1.1 403 ")
    later = HostRule("allow", "later.test", (8443,), "allowed_domains")
    files = squid.render(ProxySpec((ALLOWED, DENIED, OTHER, later), {**HOSTS, "later.test": "127.0.0.1"}),
                         (SECRET, OTHER_SECRET))
    for path, (content, mode) in files.items():
        incus("file", "push", "--uid", "0", "--gid", str(squid.PROXY_GID), "--mode", f"{mode:o}", "-",
              f"{proxy}{path}", input=content)
    run(proxy, "squid -k reconfigure")
    # allowed now: squid connects to 127.0.0.1:8443, where nothing listens (not a 403 any more)
    status = wait_for("the new rule", lambda: (lambda line: line if not line.startswith("HTTP/1.1 403 ") else None)(
        run(proxy, get, check=False)), timeout=30)
    assert status.startswith("HTTP/1.1 50"), status
    assert run(proxy, "systemctl is-active squid").strip() == "active"


def test_the_request_log_is_rotated_by_size(proxy: str) -> None:
    assert run(proxy, "systemctl is-enabled cci-proxy-rotate.timer").strip() == "enabled"
    run(proxy, f"{proxy_image.ROTATE}")  # a small log stays
    assert run(proxy, f"ls {squid.ACCESS_LOG}.0 2>/dev/null || echo none").strip() == "none"
    run(proxy, f"truncate -s {squid.LOG_ROTATE_BYTES + 1} {squid.ACCESS_LOG} && {proxy_image.ROTATE}")
    wait_for("the rotated log", lambda: run(proxy, f"ls {squid.ACCESS_LOG}.0 2>/dev/null || true").strip())
    get = "exec 3<>/dev/tcp/127.0.0.1/3128; printf 'GET http://nowhere.test/ HTTP/1.1\\r\\nHost: nowhere.test\\r\\n" \
          "\\r\\n' >&3; head -n 1 <&3"
    run(proxy, get)
    (record,) = wait_for("a record in the new log", lambda: records(proxy))
    assert record.host == "nowhere.test" and int(run(proxy, f"stat -c %s {squid.ACCESS_LOG}")) < 4096

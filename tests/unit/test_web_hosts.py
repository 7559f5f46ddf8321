"""The test hosts' web server and the in-container client (tests/web_echo_server.py, tests/web_client.py), on loopback."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.network_hosts import WEB_CLIENT, TlsFiles, make_tls, start_web_server, web_get
from tests.web_client import split_address


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"), addresses=("127.0.0.1",))


@pytest.fixture(scope="module")
def ports(tls: TlsFiles) -> Iterator[tuple[int, int]]:
    """The TLS and plain HTTP ports of a web server on 127.0.0.1."""
    proc, bound = start_web_server(tls, ["127.0.0.1"], tls_port=0, http_port=0)
    try:
        yield int(bound[0][1]), int(bound[0][2])  # type: ignore[call-overload]
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        assert proc.stdout
        proc.stdout.close()


def client(tls: TlsFiles, *specs: dict[str, object], extra: tuple[str, ...] = ()) -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, "-I", str(WEB_CLIENT), "--cafile", str(tls.ca), *extra,
                          *(json.dumps(spec) for spec in specs)], capture_output=True, text=True, timeout=30, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_the_ca_is_one_strict_verifiers_accept(tls: TlsFiles) -> None:
    text = subprocess.run(["openssl", "x509", "-in", str(tls.ca), "-noout", "-text"], capture_output=True, text=True,
                          check=True).stdout
    assert "CA:TRUE" in text and "Certificate Sign, CRL Sign" in text and "Subject Key Identifier" in text
    server = subprocess.run(["openssl", "x509", "-in", str(tls.cert), "-noout", "-text"], capture_output=True,
                            text=True, check=True).stdout
    assert "DNS:*.wild.ccit.test" in server and "IP Address:127.0.0.1" in server and "CA:FALSE" in server
    assert "Authority Key Identifier" in server
    assert tls.key.stat().st_mode & 0o777 == 0o600 and tls.ca.stat().st_mode & 0o777 == 0o644
    with pytest.raises(ValueError, match="bad certificate name"):
        make_tls(tls.ca.parent / "bad", names=("a b",))


def test_the_server_tells_what_arrived(tls: TlsFiles, ports: tuple[int, int]) -> None:
    tls_port, http_port = ports
    answer = web_get("127.0.0.1", tls_port=tls_port, ca=tls.ca, sni="x.wild.ccit.test",
                     headers={"Authorization": "Bearer p", "X-Two": "2"}, path="/a?b=c")
    assert (answer["tls"], answer["sni"], answer["port"], answer["request_line"]) == (
        True, "x.wild.ccit.test", tls_port, "GET /a?b=c HTTP/1.1")
    assert ["Authorization", "Bearer p"] in answer["headers"] and ["X-Two", "2"] in answer["headers"]
    plain = web_get("127.0.0.1", tls_port=http_port)
    assert (plain["tls"], plain["sni"], plain["host"]) == (False, None, f"127.0.0.1:{http_port}")
    with pytest.raises(ssl.SSLCertVerificationError):
        web_get("127.0.0.1", tls_port=tls_port, ca=tls.ca, sni="example.com")


class RefusingProxy:
    """A CONNECT proxy on loopback: tunnels to ``target`` (whatever was asked) or answers ``status``."""

    def __init__(self, status: int, target: tuple[str, int]) -> None:
        self.status, self.target = status, target
        self.asked: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(1)
            self.asked.append(head.split(b"\r\n")[0].decode())
            if self.status != 200:
                conn.sendall(f"HTTP/1.1 {self.status} No\r\nContent-Length: 0\r\n\r\n".encode())
                conn.close()
                continue
            upstream = socket.create_connection(self.target)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                sock.close()


def test_the_client_tunnels_with_any_server_name_and_reports_a_refusal(tls: TlsFiles, ports: tuple[int, int]) -> None:
    tls_port, _ = ports
    tunnel = RefusingProxy(200, ("127.0.0.1", tls_port))
    refusing = RefusingProxy(403, ("127.0.0.1", tls_port))
    through, other_name, refused = client(
        tls,
        {"url": "https://api.ccit.test/x", "proxy": f"127.0.0.1:{tunnel.port}", "headers": {"A": "b"}},
        {"url": "https://api.ccit.test/", "proxy": f"127.0.0.1:{tunnel.port}", "sni": "other.ccit.test",
         "connect": "[2001:db8::1]:443"},
        {"url": "https://api.ccit.test/", "proxy": f"127.0.0.1:{refusing.port}"})
    assert (through["status"], through["connect"], through["error"]) == (200, 200, None)
    answer = through["answer"]
    assert isinstance(answer, dict) and answer["sni"] == "api.ccit.test" and ["A", "b"] in answer["headers"]
    assert isinstance(other_name["answer"], dict) and other_name["answer"]["sni"] == "other.ccit.test"
    assert tunnel.asked == ["CONNECT api.ccit.test:443 HTTP/1.1", "CONNECT [2001:db8::1]:443 HTTP/1.1"]
    assert (refused["status"], refused["connect"], refused["answer"]) == (None, 403, None)


def test_the_client_times_fresh_and_kept_alive_requests(tls: TlsFiles, ports: tuple[int, int]) -> None:
    tls_port, http_port = ports
    for spec in ({"url": "https://api.ccit.test/", "connect": f"127.0.0.1:{tls_port}"},
                 {"url": f"http://127.0.0.1:{http_port}/"}):
        for extra in (("--repeat", "20"), ("--repeat", "20", "--keep-alive")):
            [timing] = client(tls, spec, extra=extra)
            assert timing["errors"] == [] and len(timing["ms"]) == 20  # type: ignore[arg-type]
            assert all(0 < ms < 1000 for ms in timing["ms"])  # type: ignore[attr-defined]


def test_split_address() -> None:
    assert split_address("[2001:db8::1]:8443", 443) == ("2001:db8::1", 8443)
    assert split_address("[2001:db8::1]", 443) == ("2001:db8::1", 443)
    assert split_address("h.test", 443) == ("h.test", 443)
    assert split_address("h.test:80", 443) == ("h.test", 80)


"""An HTTP(S) client for tests inside containers: requests directly or through a proxy, with any TLS server name.

    python3 web_client.py [--cafile FILE]... REQUEST_JSON...
    python3 web_client.py [--cafile FILE]... --repeat N [--keep-alive] REQUEST_JSON

A request is a JSON object: ``url`` (``https://api.ccit.test/x`` or ``http://api.ccit.test:8080/x``),
``proxy`` (``HOST:PORT``; empty or missing: connect directly), ``connect`` (``HOST:PORT`` asked for in the
CONNECT or, directly, the address connected to: by default the URL's), ``sni`` (the TLS server name
sent and checked: by default the URL's host), ``headers`` (an object) and ``method`` (``GET``).
HTTPS through a proxy is a CONNECT, then TLS inside the tunnel; HTTP through a proxy is a request for
the absolute URL. Certificates are checked against the ``--cafile`` files that exist.

Without ``--repeat`` it prints one JSON line per request: ``status`` (the HTTP status, or null),
``connect`` (the status of the proxy's answer to the CONNECT, or null), ``answer`` (the body parsed as
JSON, or null), ``text`` (the body's start when it is not JSON) and ``error`` (what failed, or null).
With ``--repeat N`` it times N requests (a new connection each, or one kept-alive connection) and
prints ``{"ms": [...], "errors": [...]}``.

Standalone (standard library only), for the container's python3 as for the host's.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit

TIMEOUT = 10


class Refused(Exception):
    """The proxy did not open the tunnel."""

    def __init__(self, status: int) -> None:
        super().__init__(f"CONNECT answered {status}")
        self.status = status


def split_address(text: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a pair."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, colon, port = text.rpartition(":")
    return (host, int(port)) if colon else (text, default_port)


def host_port(url: str) -> tuple[str, str, int, str]:
    """The scheme, host, port and path of ``url``."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    path = parts.path or "/"
    return parts.scheme, parts.hostname or "", parts.port or default, path + (f"?{parts.query}" if parts.query else "")


def tcp(address: tuple[str, int]) -> socket.socket:
    """A TCP connection that sends each write at once (no Nagle delay: a request head and body are two writes)."""
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tunnel(proxy: str, target: str) -> socket.socket:
    """A TCP connection to ``proxy`` on which it opened a tunnel to ``target`` (raises :class:`Refused`)."""
    sock = tcp(split_address(proxy, 3128))
    try:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError("the proxy closed the connection during CONNECT")
            head += chunk
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            raise Refused(status)
        return sock
    except BaseException:
        sock.close()
        raise


class Client:
    """Connections for one request spec, with the certificates of ``cafiles``."""

    def __init__(self, spec: dict[str, object], cafiles: list[str]) -> None:
        self.url = str(spec["url"])
        self.scheme, self.host, self.port, self.path = host_port(self.url)
        self.proxy = str(spec.get("proxy") or "")
        default_target = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        self.target = str(spec.get("connect") or default_target)
        self.sni = spec.get("sni", self.host)
        self.method = str(spec.get("method", "GET"))
        self.headers = {str(key): str(value) for key, value in dict(spec.get("headers") or {}).items()}  # type: ignore[call-overload]
        self.context = ssl.create_default_context()
        for cafile in cafiles:
            if os.path.exists(cafile):
                self.context.load_verify_locations(cafile)
        if not self.sni:
            self.context.check_hostname = False

    def connect(self) -> http.client.HTTPConnection:
        """A connection ready for requests to the URL."""
        if self.scheme == "http" and self.proxy:
            host, port = split_address(self.proxy, 3128)
            return http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        if self.scheme == "http":
            host, port = split_address(self.target, self.port)
            return http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        sock = tunnel(self.proxy, self.target) if self.proxy else tcp(split_address(self.target, self.port))
        try:
            tls = self.context.wrap_socket(sock, server_hostname=str(self.sni) if self.sni else None)
        except BaseException:
            sock.close()
            raise
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        conn.sock = tls
        return conn

    def request(self, conn: http.client.HTTPConnection) -> tuple[int, bytes]:
        """Send the request on ``conn``; the status and the body."""
        target = self.url if self.scheme == "http" and self.proxy else self.path
        headers = {"Host": self.host if self.port in (80, 443) else f"{self.host}:{self.port}", **self.headers}
        conn.request(self.method, target, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def once(spec: dict[str, object], cafiles: list[str]) -> dict[str, object]:
    """One request on a new connection, told as :mod:`this module's <web_client>` JSON line."""
    client = Client(spec, cafiles)
    result: dict[str, object] = {"status": None, "connect": 200 if client.proxy and client.scheme == "https" else None,
                                 "answer": None, "text": "", "error": None}
    try:
        conn = client.connect()
        try:
            status, body = client.request(conn)
        finally:
            conn.close()
    except Refused as refused:
        result.update(connect=refused.status, error=describe(refused))
        return result
    except Exception as exc:  # noqa: BLE001 - every failure is an answer here
        result["error"] = describe(exc)
        return result
    result["status"] = status
    try:
        result["answer"] = json.loads(body)
    except ValueError:
        result["text"] = body[:300].decode(errors="replace")
    return result


def timed(spec: dict[str, object], cafiles: list[str], runs: int, keep_alive: bool) -> dict[str, list[object]]:
    """Milliseconds per request for ``runs`` requests (each on a new connection unless ``keep_alive``)."""
    client = Client(spec, cafiles)
    samples: list[object] = []
    errors: list[object] = []
    conn = client.connect() if keep_alive else None
    for _ in range(runs):
        started = time.perf_counter()
        try:
            current = conn or client.connect()
            status, _ = client.request(current)
            if not keep_alive:
                current.close()
            if status != 200:
                errors.append(status)
                continue
        except Exception as exc:  # noqa: BLE001
            errors.append(describe(exc))
            continue
        samples.append((time.perf_counter() - started) * 1000)
    if conn:
        conn.close()
    return {"ms": samples, "errors": errors}


def main(argv: list[str]) -> int:
    cafiles: list[str] = []
    runs = 0
    keep_alive = False
    specs = []
    args = iter(argv)
    for arg in args:
        if arg == "--cafile":
            cafiles.append(next(args))
        elif arg == "--repeat":
            runs = int(next(args))
        elif arg == "--keep-alive":
            keep_alive = True
        else:
            specs.append(json.loads(arg))
    if runs:
        print(json.dumps(timed(specs[0], cafiles, runs, keep_alive)), flush=True)
        return 0
    for spec in specs:
        print(json.dumps(once(spec, cafiles)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""An HTTP and HTTPS server for the network test hosts: it answers every request with a JSON account of it.

    python3 -I web_echo_server.py CERT KEY TLS_PORT HTTP_PORT ADDRESS...

On each ADDRESS it serves HTTPS (with CERT and KEY) on TLS_PORT and plain HTTP on HTTP_PORT (0: a free
port). Every request, whatever its method and path, gets 200 and a JSON object (:func:`account`): the
address and port it came in at, the client's address, whether it came over TLS and the server name (SNI)
the client sent, the request line, the Host header, every header in order, and the body's length. A
test sees in it which host answered and what reached that host (a placeholder or a real secret).
HTTP/1.1 keep-alive works, so a client can time many requests on one connection. Once it listens it
prints one line: ``ready`` and a JSON list of ``[address, tls port, http port]``.

Standalone (standard library only): tests/network_hosts.py runs it inside a network namespace.
"""

from __future__ import annotations

import json
import signal
import socket
import socketserver
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_handshake = threading.local()
"""The server name the client sent in the TLS handshake running in this thread."""


class Handler(BaseHTTPRequestHandler):
    """Answers each request with :func:`account`."""

    protocol_version = "HTTP/1.1"
    server_version = "ccit-web"
    timeout = 30  # an idle kept-alive connection ends after this
    disable_nagle_algorithm = True  # the head and the body go out in two writes

    def answer(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return
        body = self.rfile.read(length) if length > 0 else b""
        data = json.dumps(self.account(len(body))).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def account(self, body_length: int) -> dict[str, object]:
        """What this request looked like on arrival."""
        local = self.connection.getsockname()
        tls = isinstance(self.connection, ssl.SSLSocket)
        return {
            "address": local[0], "port": local[1], "client": self.client_address[0],
            "tls": tls, "sni": getattr(_handshake, "server_name", None) if tls else None,
            "request_line": self.requestline, "method": self.command, "path": self.path,
            "host": self.headers.get("Host"), "headers": [[name, value] for name, value in self.headers.items()],
            "body_length": body_length,
        }

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


for _method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
    setattr(Handler, f"do_{_method}", Handler.answer)


class Server(ThreadingHTTPServer):
    """One listening socket; with ``context`` each connection's TLS handshake runs in its own thread."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None) -> None:
        self.context = context
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse lookup of the address (no DNS in a test namespace: it would hang)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        if self.context is None:
            super().finish_request(request, client_address)
            return
        _handshake.server_name = None
        request.settimeout(Handler.timeout)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError included: a client that gave up or distrusts the certificate
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember(_sock: object, server_name: str | None, _context: object) -> None:
        _handshake.server_name = server_name

    context.sni_callback = remember
    return context


def main(argv: list[str]) -> None:
    cert, key, tls_port, http_port, *addresses = argv
    context = tls_context(cert, key)
    servers = []
    bound = []
    for address in addresses:
        secure = Server((address, int(tls_port)), context)
        plain = Server((address, int(http_port)), None)
        servers += [secure, plain]
        bound.append([address, secure.server_address[1], plain.server_address[1]])
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", json.dumps(bound), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])

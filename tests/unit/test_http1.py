"""cci's HTTP/1.1 client (plugins/incus/http1.py) against answers written byte by byte."""

from __future__ import annotations

import io
import socket
import subprocess
import sys

import pytest

from cci_builtin_plugins.incus.http1 import ClosedBeforeAnswer, Connection, ProtocolError


class Scripted:
    """Connections whose server side has already written ``answers`` (one per connection opened), then closed
    its writing end; what the client sent is kept per connection."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = list(answers)
        self.servers: list[socket.socket] = []

    def connect(self) -> socket.socket:
        client, server = socket.socketpair()
        server.sendall(self.answers.pop(0))
        server.shutdown(socket.SHUT_WR)
        self.servers.append(server)
        return client

    def sent(self, index: int = 0) -> bytes:
        server = self.servers[index]
        server.setblocking(False)
        try:
            return server.recv(1 << 20)
        except BlockingIOError:
            return b""

    def connection(self) -> Connection:
        return Connection(self.connect, "localhost")


def ok(body: bytes, *fields: str) -> bytes:
    head = "".join(f"{field}\r\n" for field in fields)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), head.encode(), body)


def test_answers_on_one_kept_alive_connection_and_the_request_as_sent() -> None:
    script = Scripted(ok(b"one", "ETag: \"x\"") + ok(b"two"))
    connection = script.connection()
    first = connection.request("PUT", "/1.0/a?project=p", b'{"k": 1}', {"Content-Type": "application/json"})
    assert (first.status, first.body, first.headers.get("etag"), first.headers["ETAG"]) == (200, b"one", '"x"', '"x"')
    assert connection.request("GET", "/1.0/b").body == b"two"
    assert len(script.servers) == 1
    assert script.sent() == (b'PUT /1.0/a?project=p HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n'
                             b'Content-Length: 8\r\n\r\n{"k": 1}GET /1.0/b HTTP/1.1\r\nHost: localhost\r\n\r\n')


def test_a_chunked_answer_with_extensions_and_a_trailer() -> None:
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"4;name=value\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n")
    connection = Scripted(answer + ok(b"next")).connection()
    assert connection.request("GET", "/").body == b"Wikipedia in \r\n\r\nchunks."
    assert connection.request("GET", "/").body == b"next"  # the trailer was read to its end


def test_an_answer_without_a_length_ends_with_the_close_and_the_next_request_reconnects() -> None:
    script = Scripted(b"HTTP/1.1 200 OK\r\n\r\nall of it", ok(b"again"))
    connection = script.connection()
    assert connection.request("GET", "/").body == b"all of it"
    assert connection.request("GET", "/").body == b"again"
    assert len(script.servers) == 2


def test_connection_close_and_http_1_0_reconnect_for_the_next_request() -> None:
    script = Scripted(ok(b"a", "Connection: close"), b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb", ok(b"c"))
    connection = script.connection()
    assert [connection.request("GET", "/").body for _ in range(3)] == [b"a", b"b", b"c"]
    assert len(script.servers) == 3


def test_interim_answers_are_skipped_and_a_head_or_204_has_no_body() -> None:
    connection = Scripted(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"real")
                          + b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
                          + b"HTTP/1.1 204 No Content\r\n\r\n" + ok(b"last")).connection()
    assert connection.request("POST", "/", b"x").body == b"real"
    head = connection.request("HEAD", "/")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "99")
    assert connection.request("DELETE", "/").status == 204
    assert connection.request("GET", "/").body == b"last"


def test_a_101_hands_over_the_socket_with_what_was_read_past_the_answer() -> None:
    connection = Scripted(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: sftp\r\n\r\nSFTP BYTES").connection()
    answer = connection.request("GET", "/1.0/instances/c/sftp", headers={"Upgrade": "sftp", "Connection": "Upgrade"})
    assert (answer.status, answer.body) == (101, b"")
    sock, reader = connection.detach()
    with sock, reader:
        assert reader.read() == b"SFTP BYTES"
    with pytest.raises(ValueError):
        connection.detach()


def test_a_streamed_body_is_sent_in_pieces_with_its_announced_length() -> None:
    script = Scripted(ok(b""))
    body = io.BytesIO(b"z" * 3000)
    script.connection().request("POST", "/up", body, {"Content-Length": "3000"})
    sent = script.sent()
    assert sent.endswith(b"\r\nContent-Length: 3000\r\n\r\n" + b"z" * 3000)
    with pytest.raises(ValueError, match="a streamed body needs its Content-Length"):
        Scripted(ok(b"")).connection().request("POST", "/up", io.BytesIO(b"z"))


def test_a_post_without_a_body_says_so() -> None:
    script = Scripted(ok(b""))
    script.connection().request("POST", "/1.0/instances/c/state")
    assert b"\r\nContent-Length: 0\r\n\r\n" in script.sent()


@pytest.mark.parametrize("target, fields", [("/a\r\nX-Injected: 1", {}), ("/a", {"X-Name": "v\r\nX-Injected: 1"}),
                                            ("/a", {"X-Name\n": "v"}), ("/a\0", {})])
def test_a_line_break_in_the_request_line_or_a_header_field_is_refused(target: str, fields: dict[str, str]) -> None:
    script = Scripted(ok(b""))
    with pytest.raises(ValueError, match="a line break in a request line or header field"):
        script.connection().request("GET", target, headers=fields)
    assert script.servers == []  # nothing was sent: no connection was even opened


@pytest.mark.parametrize("answer, problem", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 status line"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "not an HTTP/1.1 status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended 5 bytes short"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "not a header field"),
    (b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n", "not a header field"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", "ended within its header"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "a chunk longer than"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * (70 << 10) + b"\r\n\r\n", "longer than 65536 bytes"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 300 + b"\r\n", "more than 256 header fields"),
])
def test_a_broken_answer_is_a_protocol_error(answer: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        Scripted(answer).connection().request("GET", "/")


def test_a_close_before_any_answer_is_told_apart() -> None:
    with pytest.raises(ClosedBeforeAnswer):
        Scripted(b"").connection().request("GET", "/")


def test_the_command_line_and_the_incus_driver_never_import_http_client_email_or_ssl() -> None:
    """They cost about 20 ms of every command (the point of http1); ssl is imported for a remote only."""
    code = ("import sys, cci_core.cli.main, cci_builtin_plugins.incus.driver, cci_builtin_plugins.incus.container, "
            "cci_builtin_plugins.incus.sftp, cci_builtin_plugins.incus.execute, cci_core.session; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('http', 'email', 'ssl')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"

"""cci's websocket client (plugins/incus/websocket.py) against a server written frame by frame (RFC 6455)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
from typing import Any

import pytest

from cci_builtin_plugins.incus.websocket import (BINARY, CLOSE, PING, PONG, TEXT, WebSocket, WebSocketError, mask,
                                                 open_socket)


def frame(opcode: int, payload: bytes, final: bool = True, masked: bool = False) -> bytes:
    """A frame as a server sends it (unmasked unless ``masked``)."""
    size = len(payload)
    first = (0x80 if final else 0) | opcode
    flag = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", first, flag | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, flag | 126, size)
    else:
        head = struct.pack("!BBQ", first, flag | 127, size)
    if masked:
        key = os.urandom(4)
        return head + key + mask(payload, key)
    return head + payload


def read_client_frame(reader: Any) -> tuple[int, bytes]:
    """The next frame a client sent: it must be final and masked."""
    first, second = reader.read(2)
    assert first & 0x80 and second & 0x80, "a client frame is final and masked"
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", reader.read(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", reader.read(8))
    key = reader.read(4)
    return first & 0x0F, mask(reader.read(size), key)


class Pair:
    """A websocket on one end of a socket pair; the test is the server at the other."""

    def __init__(self) -> None:
        client, self.server = socket.socketpair()
        self.reader = self.server.makefile("rb")
        self.data: list[bytes] = []
        self.closes = 0
        self.ended = threading.Event()

        def on_close() -> None:
            self.closes += 1

        self.socket = WebSocket(client, client.makefile("rb"), on_data=self.data.append, on_close=on_close)

    def run(self) -> threading.Thread:
        def run() -> None:
            self.socket.run()
            self.ended.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def test_messages_of_every_length_and_fragments_joined_then_the_empty_message_and_the_close() -> None:
    pair = Pair()
    big = os.urandom(70_000)
    pair.server.sendall(frame(BINARY, b"a") + frame(BINARY, b"b" * 300) + frame(BINARY, big)
                        + frame(BINARY, b"one ", final=False) + frame(0, b"two ", final=False) + frame(0, b"three")
                        + frame(TEXT, b'{"x": 1}') + frame(BINARY, b"") + frame(CLOSE, struct.pack("!H", 1000)))
    pair.run().join(5)
    assert pair.ended.is_set()
    assert pair.data == [b"a", b"b" * 300, big, b"one two three", b'{"x": 1}']
    assert pair.closes == 2  # the empty message (Incus's end of output), then the close
    assert read_client_frame(pair.reader) == (CLOSE, struct.pack("!H", 1000))  # the close answered
    with pytest.raises(OSError):
        pair.socket.send(b"late")


def test_a_ping_is_answered_with_its_payload_and_a_masked_server_frame_is_read() -> None:
    pair = Pair()
    pair.server.sendall(frame(PING, b"are you there") + frame(BINARY, b"masked", masked=True))
    pair.run()
    assert read_client_frame(pair.reader) == (PONG, b"are you there")
    pair.server.shutdown(socket.SHUT_RDWR)
    assert pair.ended.wait(5)
    assert pair.data == [b"masked"] and pair.closes == 1  # a dropped connection ends it as a close does


@pytest.mark.parametrize("payload", [b"", b"x", b"y" * 125, b"z" * 126, os.urandom(65_535), os.urandom(200_000)])
def test_what_is_sent_is_one_masked_frame_the_server_reads_back(payload: bytes) -> None:
    pair = Pair()
    pair.socket.send(payload)
    assert read_client_frame(pair.reader) == (BINARY, payload)
    pair.socket.send('{"command": "signal", "signal": 2}', binary=False)
    assert read_client_frame(pair.reader) == (TEXT, b'{"command": "signal", "signal": 2}')


def test_a_close_of_a_socket_nobody_reads_sends_the_end_once_and_frees_the_connection() -> None:
    pair = Pair()
    pair.socket.close()
    pair.socket.close()
    assert read_client_frame(pair.reader) == (CLOSE, struct.pack("!H", 1000))
    assert pair.reader.read() == b""  # nothing more, and the connection closed
    with pytest.raises(OSError):
        pair.socket.send(b"after the end")


@pytest.mark.parametrize("bad", [frame(0x3, b"reserved"), frame(0, b"a continuation of nothing"),
                                 struct.pack("!BBQ", 0x82, 127, 1 << 40), frame(BINARY, b"cut")[:4]])
def test_a_frame_that_breaks_the_protocol_ends_the_stream(bad: bytes) -> None:
    pair = Pair()
    pair.server.sendall(frame(BINARY, b"before") + bad)
    pair.server.shutdown(socket.SHUT_WR)
    pair.run().join(5)
    assert pair.ended.is_set() and pair.data == [b"before"] and pair.closes == 1


class Endpoint:
    """An endpoint whose socket is the client end of a pair; ``answer`` makes the server's handshake answer."""

    host = "localhost"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.request = b""

    def open(self) -> socket.socket:
        client, server = socket.socketpair()

        def serve() -> None:
            with server, server.makefile("rb") as reader:
                self.request = b"".join(iter(reader.readline, b"\r\n"))
                key = next(line.split(b": ", 1)[1] for line in self.request.split(b"\r\n")
                           if line.lower().startswith(b"sec-websocket-key:"))
                server.sendall(self.answer(key) + frame(BINARY, b"hello"))
                server.shutdown(socket.SHUT_WR)
                reader.read()

        threading.Thread(target=serve, daemon=True).start()
        return client


def accepted(key: bytes) -> bytes:
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def test_the_handshake_then_a_message_the_server_sent_with_its_answer() -> None:
    endpoint = Endpoint(accepted)
    data: list[bytes] = []
    ws = open_socket(endpoint, "/1.0/operations/x/websocket?secret=s", on_data=data.append)  # type: ignore[arg-type]
    ws.run()
    assert data == [b"hello"]
    head = endpoint.request.split(b"\r\n")
    assert head[0] == b"GET /1.0/operations/x/websocket?secret=s HTTP/1.1"
    assert {b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13"} <= set(head)


@pytest.mark.parametrize("answer, problem", [
    (lambda key: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 40\r\n\r\n" + b'{"error": "not authorized", "x": "yyyy"}',
     "403: not authorized"),
    (lambda key: accepted(b"another key"), "Sec-WebSocket-Accept does not match"),
])
def test_a_handshake_not_answered_as_a_websocket_is_an_error(answer: Any, problem: str) -> None:
    with pytest.raises(WebSocketError, match=problem):
        open_socket(Endpoint(answer), "/1.0/events")  # type: ignore[arg-type]

"""Websockets to Incus (RFC 6455, client side): exec streams and the events feed.

The handshake is one :mod:`http1` request answered with a switch of protocols; then
frames go both ways on that socket. What a client sends is masked, as the protocol
asks, XORed as one integer (at C speed). ws4py did this before: importing it (with
logging, pickle, hashlib and ssl, and pyOpenSSL where installed) cost every command
that runs one about 30 ms, and it masked a byte at a time.
"""

from __future__ import annotations

import base64
import json
import os
import socket as sockets
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib import parse

from cci_builtin_plugins.incus.errors import error_detail
from cci_builtin_plugins.incus.http1 import Connection

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.connection import Endpoint

#: the key the server's answer to a handshake must be made from (RFC 6455, section 1.3)
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: the largest message cci takes from Incus (its exec output comes in pieces of at most a few hundred KiB)
MAX_MESSAGE = 64 << 20
#: close codes: a normal end
NORMAL_CLOSURE = 1000
#: seconds a websocket that nothing reads waits for the server's close before its TCP connection is closed
CLOSE_WAIT = 5.0


class WebSocketError(Exception):
    """A frame that breaks the protocol, or a handshake Incus did not answer as a websocket."""


class WebSocket:
    """One client websocket on a connected socket: :meth:`run` (in a thread of its own) receives until the end,
    passing each non-empty data message to ``on_data``; ``on_close`` is called when the stream ends (Incus sends
    an empty message, or closes). :meth:`send` and :meth:`close` may be called from any thread."""

    def __init__(self, sock: sockets.socket, reader: BinaryIO, *, on_data: Callable[[bytes], Any] | None = None,
                 on_close: Callable[[], Any] | None = None) -> None:
        self._socket, self._reader = sock, reader
        self._on_data, self._on_close = on_data, on_close
        self._sending = threading.Lock()
        self._state = threading.Lock()
        self._close_sent = self._running = self._finished = self._shutting = False

    # -- sending ------------------------------------------------------------------------------

    def send(self, data: bytes | str, binary: bool = True) -> None:
        """Send one message (a ``str`` as UTF-8); an :class:`OSError` once the socket is closed."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._send_frame(BINARY if binary else TEXT, payload)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        key = os.urandom(4)
        with self._sending:
            if self._close_sent:
                raise ConnectionError("the websocket is closed")
            if opcode == CLOSE:
                self._close_sent = True
            self._socket.sendall(head + key + mask(payload, key))

    def close(self, code: int = NORMAL_CLOSURE, *, linger: bool = False) -> None:
        """Say the end (once); the socket itself is closed when :meth:`run` ends, or now if it does not run. With
        ``linger`` (a socket that carried data to the server: a command's input), over TCP only once the server
        has answered the close (see :meth:`_await_close`)."""
        try:
            self._send_frame(CLOSE, struct.pack("!H", code))
        except OSError:
            pass  # sent before, or the server has gone: either way there is nothing more to say
        with self._state:
            if self._running or self._shutting:
                return
            self._shutting = True
        if linger and self._socket.family != sockets.AF_UNIX:
            self._await_close()
        self._shut()

    def _await_close(self) -> None:
        """Read until the server's close (at most :data:`CLOSE_WAIT` seconds): a TCP socket closed with data
        unread (a TLS session ticket, say) is reset, and a reset can drop what the server had not read yet of
        what was sent (the end of a command's input)."""
        try:
            self._socket.settimeout(CLOSE_WAIT)
            while self._frame()[1] != CLOSE:
                pass
        except (OSError, ValueError, WebSocketError):
            pass  # it closed, broke or kept silent: nothing more to wait for

    def _shut(self) -> None:
        with self._state:
            self._running = False
        for part in (self._reader, self._socket):
            try:
                part.close()
            except OSError:
                pass

    # -- receiving ----------------------------------------------------------------------------

    def run(self) -> None:
        """Receive until the server closes (or the connection breaks), then close; ``on_close`` at the end."""
        with self._state:
            if self._finished or self._running:
                return
            self._running = True
        try:
            while (message := self._message()) is not None:
                if message:
                    if self._on_data is not None:
                        self._on_data(message)
                elif self._on_close is not None:  # Incus marks the end of the output with an empty message
                    self._on_close()
        except (OSError, ValueError, WebSocketError):
            pass  # a broken connection ends the stream as a close does; cci judges outcomes itself
        finally:
            with self._state:
                self._finished = True
            self._shut()
            if self._on_close is not None:
                self._on_close()

    def _message(self) -> bytes | None:
        """The next data message (fragments joined); None at a close. Pings are answered."""
        parts: list[bytes] = []
        size = 0
        while True:
            final, opcode, payload = self._frame()
            if opcode == CLOSE:
                try:
                    self._send_frame(CLOSE, payload[:2])
                except OSError:
                    pass
                return None
            if opcode == PING:
                self._send_frame(PONG, payload)
                continue
            if opcode == PONG:
                continue
            if opcode not in (CONTINUATION, TEXT, BINARY) or (opcode == CONTINUATION) != bool(parts):
                raise WebSocketError(f"unexpected frame (opcode {opcode})")
            size += len(payload)
            if size > MAX_MESSAGE:
                raise WebSocketError(f"a message over {MAX_MESSAGE} bytes")
            parts.append(payload)
            if final:
                return b"".join(parts)

    def _frame(self) -> tuple[bool, int, bytes]:
        first, second = self._exactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._exactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._exactly(8))
        if size > MAX_MESSAGE:
            raise WebSocketError(f"a frame over {MAX_MESSAGE} bytes")
        key = self._exactly(4) if second & 0x80 else b""
        payload = self._exactly(size)
        return bool(first & 0x80), first & 0x0F, mask(payload, key) if key else payload

    def _exactly(self, size: int) -> bytes:
        data = self._reader.read(size) if size else b""
        if len(data) < size:
            raise ConnectionError("the websocket ended within a frame" if data else "the websocket ended")
        return data


def mask(data: bytes, key: bytes) -> bytes:
    """``data`` XORed with the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    size = len(data)
    if not size:
        return b""
    pad = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(size, "big")


def open_socket(endpoint: Endpoint, resource: str, *, on_data: Callable[[bytes], Any] | None = None,
                on_close: Callable[[], Any] | None = None) -> WebSocket:
    """A connected websocket for ``resource`` (a path with its query) on ``endpoint``; run its :meth:`~WebSocket.run`
    in a thread to receive. Raises :class:`WebSocketError` when Incus answers with anything but the switch
    (its status and message), :class:`OSError` when the connection fails."""
    key = base64.b64encode(os.urandom(16))
    connection = Connection(endpoint.open, endpoint.host)
    try:
        answer = connection.request("GET", resource, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key.decode(),
            "Sec-WebSocket-Version": "13"})
        if answer.status != 101:
            raise WebSocketError(f"{answer.status}: {error_detail(answer.status, answer.body)}")
        if answer.headers.get("Sec-WebSocket-Accept", "") != _accept(key):
            raise WebSocketError("the server's Sec-WebSocket-Accept does not match the key sent")
        sock, reader = connection.detach()
    except BaseException:
        connection.close()
        raise
    return WebSocket(sock, reader, on_data=on_data, on_close=on_close)


def _accept(key: bytes) -> str:
    from cci_core.api import sha1

    return base64.b64encode(sha1(key + _ACCEPT_GUID).digest()).decode()


def close_quietly(socket: Any, *, linger: bool = False) -> None:
    """Close a websocket that the server may have closed already (``linger``: see :meth:`WebSocket.close`)."""
    try:
        socket.close(linger=True) if linger else socket.close()
    except (OSError, ValueError, RuntimeError):
        pass


#: lifecycle actions after which an instance no longer runs
_STOPPED = ("instance-shutdown", "instance-stopped", "instance-deleted")


def on_stop(name: str, wake: Any) -> Any:
    """An events handler that calls ``wake`` when instance ``name`` stops or disappears."""

    def handle(message: bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            return
        metadata = event.get("metadata") or {}
        source = parse.urlparse(str(metadata.get("source", ""))).path
        if metadata.get("action") in _STOPPED and source.rstrip("/").endswith(f"/instances/{name}"):
            wake()

    return handle

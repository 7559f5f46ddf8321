"""Websockets to Incus with ws4py: exec streams and the events feed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable
from urllib import parse

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.connection import Endpoint


def open_socket(endpoint: Endpoint, resource: str, *, on_data: Callable[[bytes], Any] | None = None,
                on_close: Callable[[], Any] | None = None) -> Any:
    """A connected ws4py client for ``resource``; run its ``run`` method in a thread to receive.

    ``on_data`` gets each non-empty message; ``on_close`` is called when the
    stream ends (Incus sends an empty message, or closes the socket).
    """
    from ws4py.client import WebSocketBaseClient

    _quiet_ws4py()
    _fast_masking()

    class Socket(WebSocketBaseClient):  # type: ignore[misc]
        def received_message(self, message: Any) -> None:
            if message.data:
                if on_data:
                    on_data(bytes(message.data))
            elif on_close:  # Incus marks the end of the output with an empty message
                on_close()

        def closed(self, code: int, reason: Any = None) -> None:
            if on_close:
                on_close()

    socket = Socket(endpoint.websocket_url, ssl_options=endpoint.ssl_options, exclude_headers=["origin"])
    socket.resource = resource
    socket.connect()
    return socket


def _quiet_ws4py() -> None:
    """ws4py logs a traceback when Incus resets a socket it is done with; cci judges outcomes itself."""
    import logging

    logger = logging.getLogger("ws4py")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _fast_masking() -> None:
    """ws4py masks what a client sends (the protocol asks it to) a byte at a time in Python: about 10 MB/s, the
    pace of a command's standard input. XORing the whole frame as one integer does the same at C speed."""
    from ws4py.framing import Frame

    if getattr(Frame.mask, "cci_fast", False):
        return

    def mask(self: Any, data: bytes) -> bytearray:
        size = len(data)
        key = bytes(self.masking_key) * (size // 4 + 1)
        return bytearray((int.from_bytes(data, "big") ^ int.from_bytes(key[:size], "big")).to_bytes(size, "big"))

    mask.cci_fast = True  # type: ignore[attr-defined]
    Frame.mask = Frame.unmask = mask


def close_quietly(socket: Any) -> None:
    """Close a websocket that the server may have closed already."""
    try:
        socket.close()
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

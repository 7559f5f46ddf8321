"""Websockets to Incus (ws4py, which pylxd brings): exec streams and the events feed."""

from __future__ import annotations

import json
from typing import Any, Callable
from urllib import parse


def events_resource(client: Any, kind: str) -> str:
    """The events endpoint for one kind of event (``lifecycle``, ``operation``) in the client's project."""
    query = {"type": kind}
    if client.project:
        query["project"] = client.project
    return f"/1.0/events?{parse.urlencode(query)}"


def open_socket(client: Any, resource: str, *, on_data: Callable[[bytes], Any] | None = None,
                on_close: Callable[[], Any] | None = None) -> Any:
    """A connected ws4py client for ``resource`` on the Incus endpoint (unix socket or HTTPS)."""
    from ws4py.client import WebSocketBaseClient

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

    socket = Socket(client.websocket_url, ssl_options=client.ssl_options, exclude_headers=["origin"])
    socket.resource = resource
    socket.connect()
    return socket


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

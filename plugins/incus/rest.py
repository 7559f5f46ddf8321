"""A small client for the Incus REST API over the standard library.

cci's own requests go through this client rather than pylxd: importing pylxd
(with requests and urllib3) takes about 330 ms, longer than a whole
``incus list``. Here a request is one round trip of :mod:`http1` on a kept-alive
connection: the local unix socket, or HTTPS with a client certificate for a remote Incus.
Websockets (exec streams, the events feed) are in :mod:`websocket`, imported when needed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple
from urllib import parse

from cci_core.api import BackendError
from cci_builtin_plugins.incus.connection import Endpoint, quote
from cci_builtin_plugins.incus.errors import APIError, APINotFound, error_detail
from cci_builtin_plugins.incus.http1 import ClosedBeforeAnswer, Connection, Headers, ProtocolError

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.websocket import WebSocket


class Response(NamedTuple):
    """One HTTP response: status, headers and raw body."""

    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        """The decoded JSON body (Incus answers every API request with JSON, except file contents)."""
        return json.loads(self.body or b"{}")


class IncusAPI:
    """Requests to one Incus endpoint, scoped to one project; a kept-alive connection per thread."""

    def __init__(self, endpoint: Endpoint, project: str | None = None) -> None:
        self.endpoint = endpoint
        self.project = project if project and project != "default" else None
        self._local = threading.local()

    # -- plumbing -----------------------------------------------------------------------------

    def _connection(self) -> Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        return connection

    def _connect(self) -> Connection:
        return Connection(self.endpoint.open, self.endpoint.host)

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """``path`` with ``params`` and the project as its query string."""
        query = {key: value for key, value in (params or {}).items() if value is not None}
        if self.project and "project" not in query:
            query["project"] = self.project
        return f"{path}?{parse.urlencode(query)}" if query else path

    def raw(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None,
            data: bytes | BinaryIO | None = None, headers: Mapping[str, str] | None = None) -> Response:
        """Send one request and return whatever Incus answers; only a broken connection raises.

        ``body`` is sent as JSON; ``data`` as it is (a file is streamed: give its Content-Length).
        """
        payload = json.dumps(body).encode() if body is not None else data
        request_headers = dict(headers or {})
        if body is not None:
            request_headers.setdefault("Content-Type", "application/json")
        target = self.url(path, params)
        for attempt in (1, 2):
            connection = self._connection()
            try:
                return Response(*connection.request(method, target, payload, request_headers))
            except (ClosedBeforeAnswer, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(connection)  # the server closed a kept-alive connection: reconnect once
                if attempt == 2:
                    raise BackendError(f"lost the connection to Incus on {self.endpoint}: {exc}") from exc
                if hasattr(payload, "seek"):
                    payload.seek(0)  # a streamed body is sent again from its start
            except ProtocolError as exc:  # a broken answer: Incus may have acted, so no retry
                self._drop(connection)
                raise bad_answer(self.endpoint, exc) from exc
            except OSError as exc:
                self._drop(connection)
                raise self.endpoint.connection_error(exc) from exc
            except BaseException:
                # Ctrl+C (or a signal) mid-request: the connection is half-used, and the cleanup
                # that follows (deleting the container, putting labels back) needs a fresh one
                self._drop(connection)
                raise
        raise AssertionError("unreachable")

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._local.connection = None

    def request(self, method: str, path: str, action: str, **kwargs: Any) -> Response:
        """Like :meth:`raw`, but an error answer raises :class:`APIError` (:class:`APINotFound` for 404)."""
        response = self.raw(method, path, **kwargs)
        if response.status >= 400:
            error = api_error(action, response)
            if response.status == 403 and self.endpoint.cert:
                error.hint = self.endpoint.untrusted_hint()
            raise error
        return response

    def get(self, path: str, action: str, **params: Any) -> Any:
        """The ``metadata`` of a GET."""
        return self.request("GET", path, action, params=params).json().get("metadata")

    def get_soon(self, path: str, action: str, **params: Any) -> Callable[[], Any]:
        """Start a :meth:`get` of ``path`` now, on a thread with a connection of its own (closed after it), while
        this one goes on with other requests; the call returned waits for it and gives what it gave (or raises
        what it raised)."""
        from cci_core.api import InBackground

        def read() -> Any:
            try:
                return self.get(path, action, **params)
            finally:
                connection = getattr(self._local, "connection", None)
                if connection is not None:
                    self._drop(connection)

        return InBackground(read, "incus-get").result

    def call(self, method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
        """Make a request and, if it started a background operation, wait for it; return the metadata."""
        answer = self.request(method, path, action, body=body, **kwargs).json()
        if answer.get("type") == "async":
            return self.wait(answer["operation"], action)
        return answer.get("metadata")

    def start(self, method: str, path: str, action: str, body: Any = None) -> dict[str, Any]:
        """Start a background operation and return the whole answer (operation URL and metadata)."""
        return dict(self.request(method, path, action, body=body).json())

    def wait(self, operation: str, action: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for an operation (on Incus's ``/wait`` endpoint) and return its metadata; its failure raises."""
        path = parse.urlsplit(operation).path.rstrip("/") + "/wait"
        params = {"timeout": -1 if timeout is None else int(timeout)}
        answer = self.request("GET", path, action, params=params).json()
        if answer.get("type") == "error":  # a failed operation: HTTP 200 with an error document
            raise APIError(action, int(answer.get("error_code") or 500), str(answer.get("error") or "failed"))
        metadata = answer.get("metadata") or {}
        if str(metadata.get("status", "")).lower() == "failure":
            raise APIError(action, 500, str(metadata.get("err") or "the operation failed"))
        return dict(metadata)

    # -- websockets ---------------------------------------------------------------------------

    def websocket(self, resource: str, **handlers: Any) -> WebSocket:
        """A connected websocket for ``resource`` (see :func:`websocket.open_socket`)."""
        from cci_builtin_plugins.incus.websocket import WebSocketError, open_socket

        try:
            return open_socket(self.endpoint, resource, **handlers)
        except WebSocketError as exc:
            raise BackendError(f"Incus refused a websocket for {resource.split('?')[0]}: {exc}") from exc
        except ProtocolError as exc:
            raise bad_answer(self.endpoint, exc) from exc
        except OSError as exc:
            raise self.endpoint.connection_error(exc) from exc

    def events_resource(self, kind: str) -> str:
        """The events endpoint for one kind of event (``lifecycle``, ``operation``) in our project."""
        return self.url("/1.0/events", {"type": kind})


def bad_answer(endpoint: Endpoint, exc: ProtocolError) -> BackendError:
    """The error for an answer that is not HTTP as expected (Incus may have acted on the request)."""
    return BackendError(f"bad answer from Incus on {endpoint}: {exc}")


def api_error(action: str, response: Response) -> APIError:
    """The error an answer that is not a success stands for (its message, not-found told apart)."""
    kind = APINotFound if response.status == 404 else APIError
    return kind(action, response.status, error_detail(response.status, response.body))



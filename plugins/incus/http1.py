"""HTTP/1.1 on one kept-alive socket: the part of the protocol the Incus API uses.

Importing ``http.client`` (which brings ``email`` and ``ssl``) took about 20 ms of
every cci command, longer than the request itself on the local socket. Incus needs
little of it: a request with a JSON or a streamed body of known length, and an answer
sized by Content-Length, sent in chunks, or ended by the server closing.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

if TYPE_CHECKING:
    from typing import Union

    Body = Union[bytes, bytearray, memoryview, BinaryIO]

#: the pieces a streamed request body is read and sent in, and the answer's read buffer
BLOCK = 1 << 20
#: the longest status, header or chunk-size line an answer may have, and the most header lines
MAX_LINE = 64 << 10
MAX_HEADERS = 256
#: methods whose request carries a body: without one, they say so (Content-Length: 0)
WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class ProtocolError(Exception):
    """An answer that is not HTTP/1.1 as expected. The server may have acted on the request."""


class ClosedBeforeAnswer(ConnectionResetError):
    """The server closed a kept-alive connection without answering a byte (it dropped it while idle)."""


class Headers(Mapping[str, str]):
    """An answer's header fields, looked up in any case; a repeated field's values joined with ", "."""

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        self._fields = {name.lower(): value for name, value in (fields or {}).items()}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        self._fields[key] = f"{self._fields[key]}, {value}" if key in self._fields else value

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class Answer(NamedTuple):
    """One HTTP answer: status, header fields and the whole body."""

    status: int
    headers: Headers
    body: bytes


class Connection:
    """One kept-alive HTTP/1.1 connection, opened with ``connect`` when first used and again after a close.

    Requests on it are made one after the other (one thread). A failure mid-request leaves it
    half-used: the caller closes it (:meth:`close`), and the next request opens a fresh one.
    """

    def __init__(self, connect: Callable[[], socket.socket], host: str) -> None:
        self._connect = connect
        self._host = host
        self._socket: socket.socket | None = None
        self._reader: BinaryIO | None = None

    def request(self, method: str, target: str, body: Body | None = None,
                headers: Mapping[str, str] | None = None) -> Answer:
        """Send one request and read its whole answer. A streamed ``body`` (a file: anything with ``read``)
        needs its Content-Length in ``headers``; it is sent in :data:`BLOCK` pieces."""
        head = self._head(method, target, body, headers or {})
        if self._socket is None:
            self._socket = self._connect()
            self._reader = self._socket.makefile("rb", buffering=BLOCK)  # type: ignore[assignment]
        if body is None or isinstance(body, (bytes, bytearray, memoryview)):
            small = body is not None and len(body) <= BLOCK
            self._socket.sendall(head + bytes(body) if small else head)  # type: ignore[arg-type]
            if body is not None and not small:
                self._socket.sendall(body)  # type: ignore[arg-type]
        else:
            self._socket.sendall(head)
            for piece in iter(lambda: body.read(BLOCK), b""):  # type: ignore[union-attr]
                self._socket.sendall(piece)
        return self._answer(method)

    def detach(self) -> tuple[socket.socket, BinaryIO]:
        """Hand over the socket and its reader (which may hold bytes read past the answer), after an
        answer that switched protocols (101); the connection is closed for this object."""
        if self._socket is None or self._reader is None:
            raise ValueError("no open connection to hand over")
        handed = self._socket, self._reader
        self._socket, self._reader = None, None
        return handed

    def close(self) -> None:
        """Close the socket (the next request opens a new one)."""
        reader, sock, self._reader, self._socket = self._reader, self._socket, None, None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()

    # -- the request ---------------------------------------------------------------------------

    def _head(self, method: str, target: str, body: Body | None, headers: Mapping[str, str]) -> bytes:
        fields = {"Host": self._host, **headers}
        named = {name.lower() for name in fields}
        if "content-length" not in named:
            if body is None:
                if method in WITH_BODY:
                    fields["Content-Length"] = "0"
            elif isinstance(body, (bytes, bytearray, memoryview)):
                fields["Content-Length"] = str(len(body))
            else:
                raise ValueError(f"{method} {target}: a streamed body needs its Content-Length")
        lines = [f"{method} {target} HTTP/1.1"] + [f"{name}: {value}" for name, value in fields.items()]
        for line in lines:
            if any(character in line for character in "\r\n\0"):
                raise ValueError(f"a line break in a request line or header field: {line[:80]!r}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # -- the answer ----------------------------------------------------------------------------

    def _line(self, what: str) -> bytes:
        assert self._reader is not None
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError(f"{what} longer than {MAX_LINE} bytes")
        return line

    def _answer(self, method: str) -> Answer:
        while True:
            line = self._line("the status line")
            if not line:
                raise ClosedBeforeAnswer("the server closed the connection before answering")
            version, _, rest = line.partition(b" ")
            code = rest[:3]
            if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.1 status line: {line[:80]!r}")
            status = int(code)
            headers = self._headers()
            if not 100 <= status < 200 or status == 101:
                break  # (an interim 1xx answer is followed by the real one)
        if method == "HEAD" or status in (101, 204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("Transfer-Encoding", "").lower():
            body = self._chunked()
        elif "Content-Length" in headers:
            length = headers["Content-Length"].strip()
            if not length.isdigit():
                raise ProtocolError(f"bad Content-Length {length[:40]!r}")
            body = self._exactly(int(length))
        else:
            assert self._reader is not None
            body = self._reader.read()  # ended by the server closing
            self.close()
        if headers.get("Connection", "").lower() == "close" or version == b"HTTP/1.0":
            self.close()
        return Answer(status, headers, body)

    def _headers(self) -> Headers:
        headers = Headers()
        for _ in range(MAX_HEADERS):
            line = self._line("a header line")
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise ProtocolError("the answer ended within its header")
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"not a header field: {line[:80]!r}")
            headers.add(name, value.strip())
        raise ProtocolError(f"more than {MAX_HEADERS} header fields")

    def _exactly(self, size: int) -> bytes:
        assert self._reader is not None
        data = self._reader.read(size)
        if len(data) < size:
            raise ProtocolError(f"the answer ended {size - len(data)} bytes short of its announced length")
        return data

    def _chunked(self) -> bytes:
        pieces = []
        while True:
            line = self._line("a chunk size")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size < 0:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}")
            if size == 0:
                break
            pieces.append(self._exactly(size))
            if self._line("a chunk's end") not in (b"\r\n", b"\n"):
                raise ProtocolError("a chunk longer than its announced size")
        for _ in range(MAX_HEADERS):  # the trailer: header fields after the last chunk, up to a blank line
            line = self._line("a trailer line")
            if line in (b"\r\n", b"\n", b""):
                return b"".join(pieces)
        raise ProtocolError(f"more than {MAX_HEADERS} trailer fields")

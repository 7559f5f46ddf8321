"""SHA-256 and SHA-1 from the interpreter's own modules where it has them: :mod:`hashlib` loads OpenSSL's library
first (some milliseconds), which every command naming a workspace, checking a config's trust or a network's rules,
or opening a websocket paid."""

from __future__ import annotations

from typing import Protocol


class Digest(Protocol):
    """A running hash (as :func:`hashlib.sha256` returns)."""

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


try:
    from _sha256 import sha256 as _sha256  # (Python up to 3.11)
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _sha2 import sha256 as _sha256  # (Python 3.12 on)
    except ImportError:
        from hashlib import sha256 as _sha256
try:
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - an interpreter without it
    from hashlib import sha1 as _sha1


def sha256(data: bytes = b"") -> Digest:
    """A SHA-256 hash of ``data``, to update further or read."""
    return _sha256(data)  # type: ignore[no-any-return]


def sha1(data: bytes = b"") -> Digest:
    """A SHA-1 hash of ``data`` (for protocols that name it, as a websocket handshake does)."""
    return _sha1(data)  # type: ignore[no-any-return]

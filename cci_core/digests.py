"""SHA-256 from the interpreter's own module where it has one: :mod:`hashlib` loads OpenSSL's library first (some
milliseconds), which every command naming a workspace, checking a config's trust or a network's rules paid."""

from __future__ import annotations

from typing import Protocol


class Digest(Protocol):
    """A running hash (as :func:`hashlib.sha256` returns)."""

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


try:
    from _sha256 import sha256 as _make  # (Python up to 3.11)
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _sha2 import sha256 as _make  # (Python 3.12 on)
    except ImportError:
        from hashlib import sha256 as _make


def sha256(data: bytes = b"") -> Digest:
    """A SHA-256 hash of ``data``, to update further or read."""
    return _make(data)  # type: ignore[no-any-return]

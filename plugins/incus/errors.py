"""Incus error answers in cci's terms: pylxd exceptions as one-line errors (for pylxd callers), busy and conflict."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cci_core.errors import BackendError, NotFoundError


@contextmanager
def incus_errors(action: str) -> Iterator[None]:
    """Report a failed Incus request as ``<action>: <Incus's message>``."""
    from pylxd.exceptions import ClientConnectionFailed, LXDAPIException, NotFound

    try:
        yield
    except NotFound as exc:
        raise NotFoundError(f"{action}: {_first_line(exc)}") from exc
    except LXDAPIException as exc:
        raise BackendError(f"{action}: {_first_line(exc)}") from exc
    except ClientConnectionFailed as exc:
        raise BackendError(f"{action}: lost the connection to Incus ({exc})") from exc


#: how Incus says that a create lost the race for its name: the name exists, or is being created
_CONFLICTS = ("UNIQUE constraint failed", "already exists", "Failed creating instance record: Instance is busy")


def is_busy(exc: BaseException) -> bool:
    """Whether Incus refused because another operation holds the instance (e.g. a racing create of its name)."""
    return "Instance is busy running" in str(exc)


def is_conflict(exc: BaseException) -> bool:
    """Whether a failed create lost the race for the name."""
    text = str(exc)
    return any(marker in text for marker in _CONFLICTS)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

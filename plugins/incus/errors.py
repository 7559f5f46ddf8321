"""Turn pylxd's exceptions into cci's one-line errors."""

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


def is_conflict(exc: BaseException) -> bool:
    """Whether a failed create lost the race for the name (Incus reports a UNIQUE constraint)."""
    text = str(exc)
    return "UNIQUE constraint failed" in text or "already exists" in text


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

"""Incus error answers in cci's terms: API errors, and the answers that mean "busy" or "name taken"."""

from __future__ import annotations

import json

from cci_core.api import BackendError, NotFoundError


class APIError(BackendError):
    """Incus answered a request with an error; ``status`` is the HTTP status."""

    def __init__(self, action: str, status: int, detail: str) -> None:
        super().__init__(f"{action}: {detail}")
        self.status = status
        self.detail = detail


class APINotFound(APIError, NotFoundError):
    """Incus answered 404: the instance, image, alias or file does not exist."""

    exit_code = NotFoundError.exit_code


#: how Incus says that a create lost the race for its name: the name exists, or is being created
_CONFLICTS = ("UNIQUE constraint failed", "already exists", "Failed creating instance record: Instance is busy")


def is_busy(exc: BaseException) -> bool:
    """Whether Incus refused because another operation holds the instance (e.g. a racing create of its name)."""
    return "Instance is busy running" in str(exc)


def is_stopped_already(exc: BaseException) -> bool:
    """Whether Incus refused a stop because the instance had stopped (powered off from inside, say, between a look
    at it and the stop): what the stop was for."""
    return "The instance is already stopped" in str(exc)


def is_conflict(exc: BaseException) -> bool:
    """Whether a failed create lost the race for the name."""
    text = str(exc)
    return any(marker in text for marker in _CONFLICTS)


def error_detail(status: int, body: bytes) -> str:
    """The first line of Incus's message in an error answer (its JSON ``error``, else the body), or the status."""
    try:
        detail = str(json.loads(body or b"{}").get("error") or "").strip()
    except (ValueError, AttributeError):
        detail = body.decode(errors="replace").strip()
    return detail.splitlines()[0] if detail else f"HTTP {status}"

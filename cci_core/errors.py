"""Typed errors that plugins raise and the CLI turns into one line and an exit code.

Every error cci reports on purpose is a :class:`CciError`. The command line
prints ``cci: <message>`` on stderr and exits with the error's ``exit_code``;
a traceback is shown only with ``--debug``. The codes are part of the public
interface (see ``docs/errors.md``)::

    1  CciError               generic failure
    2  UsageError             bad command-line input
    2  ConfigError            malformed or ill-typed configuration
    3  PluginError            a plugin failed to load or is not available
    4  BackendError           the container backend (Incus) failed or is unreachable
    5  NotFoundError          a named container, image or session does not exist
    6  NotImplementedYetError the command exists but is not implemented yet
  130  (Ctrl+C)               interrupted
"""

from __future__ import annotations


class CciError(Exception):
    """Base of every error cci reports as a clean one-line message."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(CciError):
    """The command line asks for something impossible or contradictory."""

    exit_code = 2


class ConfigError(CciError):
    """A config file, environment variable or flag value is malformed or ill-typed.

    ``source`` names where the bad value came from (``path:line`` or ``CCI_FOO``)
    and ``key`` the dotted config key, when known.
    """

    exit_code = 2

    def __init__(
        self, message: str, *, source: str | None = None, key: str | None = None, hint: str | None = None
    ) -> None:
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.source = source
        self.key = key


class PluginError(CciError):
    """A plugin could not be imported, registered something twice, or broke a contract."""

    exit_code = 3


class NotAvailableError(PluginError):
    """A driver, tool, network policy or image builder was asked for by a name nobody registered."""


class BackendError(CciError):
    """The container backend failed: daemon down, permission denied, missing storage..."""

    exit_code = 4


class NotFoundError(CciError):
    """A named container, image or session does not exist."""

    exit_code = 5


class NotImplementedYetError(CciError):
    """The command is part of cci's interface but has not been implemented yet."""

    exit_code = 6

"""The tool-adapter interface: how cci runs one AI coding tool (Claude Code, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple


class CredentialFile(NamedTuple):
    """A host file copied into the container at every start, never saved with a session.

    :param host_path: path on the host; ``~`` is the invoking user's home.
    :param container_path: path relative to the container user's home.
    :param mode: file mode inside the container.
    """

    host_path: str
    container_path: str
    mode: int = 0o600


class ToolAdapter(ABC):
    """One AI coding tool, selected by ``[tool] name`` or ``--tool``.

    Subclasses set the class attributes and are registered with
    ``register.add_tool(cls)``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: the executable run inside the container (overridable with ``[tool] binary``)
    default_binary: ClassVar[str]
    #: the tool's state directory, relative to the container user's home; saved per session
    state_dir: ClassVar[str]
    credential_files: ClassVar[tuple[CredentialFile, ...]] = ()

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or self.default_binary

    @abstractmethod
    def command(self, session_id: str, *, resume: bool) -> list[str]:
        """The argv that starts a new session with ``session_id``, or resumes it."""

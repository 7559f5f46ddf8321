"""The container-backend interface. The Incus driver is one plugin implementing it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, NamedTuple

if TYPE_CHECKING:
    from cci_core.config import Config


class ServerInfo(NamedTuple):
    """What the backend says about itself."""

    server: str
    version: str
    api_version: str
    details: Mapping[str, str] = MappingProxyType({})


class ExecResult(NamedTuple):
    """The outcome of a command run inside a container."""

    exit_code: int
    stdout: str
    stderr: str


class Container(ABC):
    """A handle on one container, as lifecycle hooks see it. Each driver provides its own."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The container's name."""

    @abstractmethod
    def push_file(self, path: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        """Write ``data`` to ``path`` inside the container with the given mode and owner."""

    @abstractmethod
    def exec(
        self,
        argv: Sequence[str],
        *,
        user: int = 0,
        group: int = 0,
        environment: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        """Run ``argv`` inside the container and wait for it."""


class Driver(ABC):
    """A container backend, selected by ``[defaults] driver``. One instance per cci invocation.

    Subclasses set :attr:`name` and :attr:`summary` and are registered with
    ``register.add_driver(cls)``. Constructing a driver must be cheap and must
    not connect: connect on first use, so commands that never touch the
    backend stay fast.
    """

    name: ClassVar[str]
    summary: ClassVar[str]

    def __init__(self, config: Config) -> None:
        self.config = config

    @abstractmethod
    def server_info(self) -> ServerInfo:
        """Connect and describe the backend; raise :class:`~cci_core.errors.BackendError` if unreachable."""

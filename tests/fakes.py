"""In-memory stand-ins for the driver interface, for fast unit tests of the core only.

Everything that touches containers is also tested against the real Incus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from cci_core.driver import Container, Driver, ExecResult, ServerInfo


class FakeContainer(Container):
    """Records pushed files and executed commands."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.files: dict[str, tuple[bytes, int, int, int]] = {}
        self.commands: list[tuple[str, ...]] = []

    @property
    def name(self) -> str:
        return self._name

    def push_file(self, path: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        self.files[path] = (data, mode, uid, gid)

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: int = 0,
        group: int = 0,
        environment: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        self.commands.append(tuple(argv))
        return ExecResult(0, "", "")


class FakeDriver(Driver):
    """A backend that answers without any daemon."""

    name = "fake"
    summary = "in-memory test driver"

    def server_info(self) -> ServerInfo:
        return ServerInfo(server="fake", version="0", api_version="1.0")

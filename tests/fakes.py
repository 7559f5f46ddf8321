"""In-memory stand-ins for the driver interface, for fast unit tests of the core only.

Everything that touches containers is also tested against the real Incus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cci_core.driver import Driver, ExecResult, ServerInfo


@dataclass
class FakeContainer:
    """Records pushed files and executed commands."""

    name: str
    files: dict[str, tuple[bytes, int, int, int]] = field(default_factory=dict)
    commands: list[tuple[str, ...]] = field(default_factory=list)

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

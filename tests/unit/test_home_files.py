"""Files cci writes into the container user's home (cci_core/home_files.py) and their users (credentials and
settings: plugins/tools/state.py; the sandbox brief): what the agent planted there is never followed or opened.

Against the real Incus: tests/integration/test_home_files.py (and test_sandbox_brief.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cci_core.config import load_config
from cci_core.context import LaunchContext
from cci_core.driver import FileStatus
from cci_core.errors import CciError
from cci_core.home_files import HomeFileRefused, home_path, read_home_file, write_home_file
from cci_core.tool import CredentialFile, ToolAdapter
from cci_builtin_plugins.tools import state
from tests.fakes import FakeContainer

CREDENTIAL = "/home/code/.tool/credentials.json"
SETTINGS = "/home/code/.tool/settings.json"
SECRET = b'{"token": "host-credential"}'


class Tool(ToolAdapter):
    name = "tool"
    summary = "a tool with a credential and settings"
    default_binary = "tool"
    state_dir = ".tool"
    credential_files = (CredentialFile("~/.tool/credentials.json", ".tool/credentials.json"),)

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        return ["tool"]

    def sandbox_settings(self) -> Mapping[str, Mapping[str, Any]]:
        return {".tool/settings.json": {"sandbox": True}}


class Special(FakeContainer):
    """A fake container with a FIFO (or another special file) at some paths."""

    def __init__(self, special: dict[str, str]) -> None:
        super().__init__("cci-0-1")
        self.special = special

    def file_status(self, path: str) -> FileStatus | None:
        return FileStatus(self.special[path]) if path in self.special else super().file_status(path)

    def remove_file(self, path: str) -> None:
        self.special.pop(path, None)
        super().remove_file(path)


def inject(container: FakeContainer, tmp_path: Path) -> None:
    """The tool-state plugin's start step (credentials in, settings merged), the host holding the credential."""
    host = Path.home() / ".tool"
    host.mkdir(exist_ok=True)
    (host / "credentials.json").write_bytes(SECRET)
    ctx = LaunchContext(config=load_config(tmp_path, environ={}), workspace=tmp_path, container_name="cci-0-1",
                        slot=1, session_id="s", persistent=True, image="cci", tool=Tool())
    state.cci_inject_credentials(ctx=ctx, container=container)


def never_read(container: FakeContainer) -> None:
    container.pull_file = lambda path: pytest.fail(f"{path} was read")  # type: ignore[method-assign]


def test_links_at_the_credentials_and_settings_places_are_replaced_never_followed(tmp_path: Path) -> None:
    container = FakeContainer("cci-0-1")
    container.links[CREDENTIAL] = "/workspace/leak.json"
    container.links[SETTINGS] = "/workspace/planted.json"
    never_read(container)
    inject(container, tmp_path)
    assert not container.links
    assert container.files[CREDENTIAL] == (SECRET, 0o600, 1000, 1000)
    assert container.files[SETTINGS] == (b'{\n  "sandbox": true\n}\n', 0o600, 1000, 1000)
    assert not [path for path in container.files if path.startswith("/workspace")]


def test_a_link_on_the_way_stops_the_write_with_a_warning_never_a_failed_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    container = FakeContainer("cci-0-1")
    container.links["/home/code/.tool"] = "/workspace"
    inject(container, tmp_path)
    assert not container.files and not container.directories
    err = capsys.readouterr().err
    assert f"{CREDENTIAL} was not written: cci-0-1:/home/code/.tool is a symlink, not a directory" in err
    assert f"{SETTINGS} was not written" in err


def test_a_link_above_the_home_is_seen_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    container = FakeContainer("cci-0-1")
    container.links["/home"] = "/workspace"  # (/home/code is then /workspace/code)
    inject(container, tmp_path)
    assert not container.files and "cci-0-1:/home is a symlink, not a directory" in capsys.readouterr().err


def test_a_directory_at_the_files_place_is_left_and_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    container = FakeContainer("cci-0-1")
    container.directories[CREDENTIAL] = (0o755, 0, 0)
    inject(container, tmp_path)
    assert CREDENTIAL not in container.files and SETTINGS in container.files
    assert f"cci-0-1:{CREDENTIAL} is a directory" in capsys.readouterr().err


def test_a_fifo_is_removed_unopened() -> None:
    container = Special({SETTINGS: "FIFO"})
    never_read(container)
    assert read_home_file(container, SETTINGS, 100) is None
    write_home_file(container, SETTINGS, b"{}", uid=1000)
    assert container.files[SETTINGS] == (b"{}", 0o600, 1000, 1000) and not container.special


def test_a_real_file_is_read_within_its_bound() -> None:
    container = FakeContainer("cci-0-1")
    container.files[SETTINGS] = (b"x" * 101, 0o644, 0, 0)
    assert read_home_file(container, SETTINGS, 101) == b"x" * 101
    never_read(container)
    with pytest.raises(HomeFileRefused, match="is over 0 KiB"):
        read_home_file(container, SETTINGS, 100)


def test_a_read_makes_no_directory() -> None:
    container = FakeContainer("cci-0-1")
    assert read_home_file(container, "/home/code/.new/deeper/file", 100) is None and not container.directories


def test_a_link_planted_while_a_directory_is_made_is_seen() -> None:
    class Racing(FakeContainer):
        def make_directory(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
            self.links[path] = "/workspace"  # the agent was faster: Incus finds a "directory" and makes none

    container = Racing("cci-0-1")
    with pytest.raises(HomeFileRefused, match="/home/code/.tool is a symlink"):
        write_home_file(container, CREDENTIAL, SECRET, uid=1000)
    assert not container.files


@pytest.mark.parametrize("relative", ["", "/etc/passwd", "../x", ".tool/../../x"])
def test_a_path_out_of_the_home_is_refused(relative: str) -> None:
    with pytest.raises(CciError, match="not a path inside the home"):
        home_path(relative)
    with pytest.raises(CciError, match="not a path inside /home/code"):
        write_home_file(FakeContainer("cci-0-1"), "/etc/passwd", b"", uid=1000)

"""Running cci again under ``sg`` for a login that lacks the Incus group: the command line, and when it happens."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from cci_builtin_plugins.incus import login_group
from cci_core.cli import entry


def test_the_sg_command_gives_the_group_then_the_users_own_group_and_keeps_every_argument() -> None:
    command = ["/home/a b/.local/bin/cci", "run", "--", "sh", "-c", "echo 'it''s' \"$HOME\"; exit 7"]
    argv = login_group.sg_command("incus-admin", "alice", command)
    assert argv[:3] == ["sg", "incus-admin", "-c"]
    inner = shlex.split(argv[3])
    assert inner[:4] == ["exec", "sg", "alice", "-c"]
    assert shlex.split(inner[4]) == command


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What rerun_under_group would exec, for a member whose process lacks the group and with sg installed."""
    calls: list[Any] = []
    monkeypatch.setattr(login_group, "lacks_group", lambda group: True)
    monkeypatch.setattr(login_group.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(login_group.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(login_group.os, "execvpe", lambda *args: calls.append(args))
    monkeypatch.delenv(login_group.MARKER, raising=False)
    return calls


def test_only_the_command_line_runs_itself_again(execs: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entry, "_started", False)  # a library caller or a test: never replaced by sg
    login_group.rerun_under_group("incus-admin")
    assert execs == []


def test_the_command_line_runs_again_under_sg_with_the_marker(execs: list[Any], monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(entry, "_started", True)
    login_group.rerun_under_group("incus-admin")
    [(program, argv, environ)] = execs
    assert (program, argv[:2]) == ("sg", ["sg", "incus-admin"])
    assert environ[login_group.MARKER] == "incus-admin"
    assert capsys.readouterr().err.startswith("cci: this login started before you joined incus-admin: ")

    monkeypatch.setenv(login_group.MARKER, "incus-admin")  # the cci under sg: never a second time
    login_group.rerun_under_group("incus-admin")
    assert len(execs) == 1

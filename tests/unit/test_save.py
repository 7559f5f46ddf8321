"""``cci save``: a running session saved now, the choice of the session, and what is refused. Against the real
Incus: tests/integration/test_headless.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cci_core import hookimpl
from cci_core.cli.main import cli
from cci_core.errors import UsageError
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_record import State
from cci_core.session_store import SessionStore
from tests.unit.test_saved_sessions import manager


def save(sessions: SessionManager, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """``cci save ARGS`` in the sessions' workspace, through ``sessions`` (a fake driver's)."""
    monkeypatch.setattr("cci_core.cli.save_cmd.manager_for", lambda ctx: sessions)
    result = CliRunner().invoke(cli, ["--workspace", str(sessions.config.workspace), "save", *args])
    return result.exit_code, result.output


def test_save_without_a_terminal_names_the_sessions_to_choose_from(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.cli import sessions as cli_sessions

    sessions = manager(tmp_path)
    first, _ = sessions.launch(LaunchRequest(tmp_path))
    second, _ = sessions.launch(LaunchRequest(tmp_path))
    monkeypatch.setattr(cli_sessions.sys.stdin, "isatty", lambda: False)
    with pytest.raises(UsageError, match=f"this workspace has 2 running sessions: {first.name}, {second.name}"):
        cli_sessions.pick_running(sessions, None, str(tmp_path.resolve()), verb="Save")
    assert cli_sessions.pick_running(sessions, second.name, "", verb="Save").name == second.name


def test_save_saves_a_running_session_now_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    class Requested:
        @hookimpl
        def cci_session_save(self, ctx, container, event):  # type: ignore[no-untyped-def]
            events.append(event.value)

    sessions = manager(tmp_path, Requested())
    container, ctx = sessions.launch(LaunchRequest(tmp_path))
    code, output = save(sessions, monkeypatch)
    saved = SessionStore().find("demo", ctx.session_id, tmp_path)
    assert (code, output) == (0, f"saved session {ctx.session_id} of {container.name} to {saved.path}\n")
    assert events == ["requested"] and container.status() == "running"


def test_save_refuses_a_session_that_is_not_running_or_has_no_tool(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = manager(tmp_path)
    ending, _ = sessions.launch(LaunchRequest(tmp_path))
    ending.set_labels({"state": State.ENDING.value})
    assert save(sessions, monkeypatch, ending.name) == (
        2, f"cci: {ending.name} is ending: only a running session can be saved (see 'cci list')\n")
    ran, _ = sessions.launch(LaunchRequest(tmp_path, kind="run"))
    assert save(sessions, monkeypatch, ran.name) == (
        2, f"cci: {ran.name} runs no tool (a 'cci run' container): it has no session to save\n")
    kept, _ = sessions.launch(LaunchRequest(tmp_path, persistent=True))
    sessions.finish(kept)  # saved, the container stopped and kept
    assert save(sessions, monkeypatch, kept.name) == (2, f"cci: {kept.name} is not a running cci session (see 'cci "
                                                         "list')\n")
    assert save(sessions, monkeypatch, "nothing-here") == (2, "cci: no container named 'nothing-here' (see 'cci "
                                                              "list')\n")


def test_save_says_when_nothing_was_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = manager(tmp_path)
    container, ctx = sessions.launch(LaunchRequest(tmp_path))
    monkeypatch.setattr("cci_builtin_plugins.tools.state.save_state", lambda ctx, container: None)  # abandoned
    assert save(sessions, monkeypatch) == (
        1, f"cci: session {ctx.session_id} of {container.name} was not saved this time (see the warning above) "
           "(its last save, if any, is kept)\n")

"""Headless runs (``cci run --prompt``) and the end of every ``cci run``: the prompt read and passed, the session
opened, run, saved and ended, the duration limit. Against the real Incus: tests/integration/test_headless.py."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cci_core import hookimpl
from cci_core.cli.main import cli
from cci_core.config import Override, load_config
from cci_core.driver import ExecResult, OutputHandler
from cci_core.errors import BackendError, UsageError
from cci_core.naming import container_name
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_headless import (
    MAX_PROMPT,
    Prompt,
    read_prompt,
)
from cci_core.session_store import SessionStore
from cci_core.tool import ToolAdapter
from tests.fakes import FakeContainer, FakeDriver


class Headless(ToolAdapter):
    name = "demo"
    summary = "a demo tool with a headless mode"
    default_binary = "demo"
    state_dir = ".demo"

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        return [self.binary, "--resume" if resume else "--new", session_id]

    def headless_command(self, session_id: str, *, resume: bool, structured: bool) -> list[str]:
        return [*self.command(session_id, resume=resume), "--print", *(["--json"] if structured else [])]


class Interactive(Headless):
    name = "interactive"
    summary = "a demo tool without a headless mode"

    def headless_command(self, session_id: str, *, resume: bool, structured: bool) -> None:
        return None


class Plugin:
    @hookimpl
    def cci_register(self, register):  # type: ignore[no-untyped-def]
        register.add_driver(FakeDriver)
        register.add_tool(Headless)
        register.add_tool(Interactive)


class Saves:
    def __init__(self) -> None:
        self.saved: list[str] = []

    @hookimpl
    def cci_post_exit_save(self, ctx, container):  # type: ignore[no-untyped-def]
        self.saved.append(ctx.session_id)


def manager(tmp_path: Path, *extra: object, tool: str = "demo", duration: str = "") -> SessionManager:
    config = load_config(tmp_path, environ={}, overrides=[Override("defaults.driver", "fake", "test"),
                                                          Override("tool.name", tool, "test"),
                                                          Override("limits.duration", duration, "test")])
    plugins = load_plugins(entry_points=False, extra=[("demo", Plugin()), *((f"x{i}", p) for i, p in enumerate(extra))])
    return SessionManager(config, FakeDriver(config), plugins)


# --- the prompt --------------------------------------------------------------------------------------------


def test_the_prompt_comes_from_the_flag_a_file_or_standard_input(tmp_path: Path) -> None:
    (tmp_path / "prompt.txt").write_bytes(b"fix the tests\n")
    assert read_prompt("do it", None, io.BytesIO()) == b"do it"
    assert read_prompt(None, str(tmp_path / "prompt.txt"), io.BytesIO()) == b"fix the tests\n"
    assert read_prompt(None, "-", io.BytesIO(b"from a pipe")) == b"from a pipe"


@pytest.mark.parametrize("make, message", [
    (lambda path: os.mkfifo(path), "is not a regular file"),  # would block a plain open
    (lambda path: path.mkdir(), "is not a regular file"),
    (lambda path: None, "cannot read the prompt file"),
    (lambda path: path.write_bytes(b"x" * (MAX_PROMPT + 1)), "is over 1 MiB"),
    (lambda path: path.write_bytes(b" \n\t"), "the prompt is empty"),
])
def test_a_prompt_file_that_is_no_readable_small_regular_file_is_refused(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "prompt"
    make(path)
    with pytest.raises(UsageError, match=message):
        read_prompt(None, str(path), io.BytesIO())


def test_an_oversized_or_doubled_prompt_is_refused() -> None:
    with pytest.raises(UsageError, match="the prompt is over 1 MiB"):
        read_prompt(None, "-", io.BytesIO(b"y" * (MAX_PROMPT + 1)))
    with pytest.raises(UsageError, match="the prompt is over 1 MiB"):
        read_prompt("z" * (MAX_PROMPT + 1), None, io.BytesIO())
    with pytest.raises(UsageError, match="not both"):
        read_prompt("a", "-", io.BytesIO(b"b"))


# --- the run -----------------------------------------------------------------------------------------------


def as_method(function: Callable[..., ExecResult]) -> Callable[..., ExecResult]:
    """``function`` (a callable object) as a method of the fake container."""
    def method(self: FakeContainer, argv: Sequence[str], **kwargs: Any) -> ExecResult:
        return function(self, argv, **kwargs)

    return method


class Exec:
    """A container's exec that records what it ran and answers with ``code`` (after writing to both streams)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.runs: list[tuple[list[str], int, str | None, dict[str, str]]] = []
        self.container: FakeContainer | None = None

    def __call__(self, container: FakeContainer, argv: Sequence[str], *, user: int = 0, group: int = 0,
                 environment: Mapping[str, str] | None = None, cwd: str | None = None,
                 stdout: OutputHandler | None = None, stderr: OutputHandler | None = None) -> ExecResult:
        if cwd != "/workspace":  # not the run: the launch's own commands (waiting for the boot)
            return ExecResult(0, "", "")
        self.runs.append((list(argv), user, cwd, dict(environment or {})))
        self.container = container
        if stdout is not None and stderr is not None:
            stdout(b"out\n")
            stderr(b"err\n")
        return ExecResult(self.code, "", "")


def test_a_headless_run_passes_the_prompt_streams_returns_the_code_and_saves_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execute = Exec(7)
    monkeypatch.setattr(FakeContainer, "exec", as_method(execute))
    saves = Saves()
    sessions = manager(tmp_path, saves)
    out: list[bytes] = []
    err: list[bytes] = []
    said: list[str] = []
    code = sessions.run_prompt(LaunchRequest(tmp_path, persistent=True), Prompt(b"hello", structured=True),
                               stdout=out.append, stderr=err.append, say=said.append)
    assert code == 7 and out == [b"out\n"] and err == [b"err\n"]
    [(argv, user, cwd, environment)] = execute.runs
    [session] = saves.saved
    assert argv == ["demo", "--new", session, "--print", "--json"]
    assert (user, cwd, environment["HOME"]) == (1000, "/workspace", "/home/code")
    # the prompt on the tool's standard input, and nothing written into the container for it
    assert execute.container is not None and execute.container.started.input == b"hello"
    assert not [path for path in execute.container.files if "prompt" in path]
    assert sessions.driver.containers == {}  # ephemeral whatever [defaults] persistent says: ended and deleted
    assert said == [f"session {session} saved: 'cci shell --resume={session}' continues it "
                    f"('cci run --resume={session} --prompt ...' headless)"]


def test_a_headless_run_continues_a_saved_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.session_store import SavedSession

    execute = Exec(0)
    monkeypatch.setattr(FakeContainer, "exec", as_method(execute))
    SessionStore().save(SavedSession("s-old", "demo", str(tmp_path.resolve()), "cci-0-1", 1, False, "", "", Path()),
                        lambda directory: None)
    saves = Saves()
    assert manager(tmp_path, saves).run_prompt(LaunchRequest(tmp_path), Prompt(b"more"), latest=True) == 0
    assert execute.runs[0][0] == ["demo", "--resume", "s-old", "--print"]
    assert saves.saved == ["s-old"]


def test_a_tool_without_a_headless_mode_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    sessions = manager(tmp_path, tool="interactive")
    with pytest.raises(UsageError, match="the tool interactive has no headless mode"):
        sessions.run_prompt(LaunchRequest(tmp_path), Prompt(b"hello"))
    assert sessions.driver.containers == {}


class Blocking:
    """An exec that runs until its container is stopped (then Incus ends it with an error)."""

    def __call__(self, container: FakeContainer, argv: Sequence[str], **kwargs: object) -> ExecResult:
        if kwargs.get("cwd") != "/workspace":  # not the run: the launch's own commands
            return ExecResult(0, "", "")
        deadline = time.monotonic() + 30
        while container.status() != "stopped":
            assert time.monotonic() < deadline, "the deadline never stopped the container"
            time.sleep(0.01)
        raise BackendError("websocket closed")


@pytest.mark.parametrize("headless", [False, True])
def test_a_run_stopped_at_the_duration_limit_exits_124_and_is_saved(
    headless: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeContainer, "exec", as_method(Blocking()))
    monkeypatch.setattr("cci_core.session.deadline_of", lambda config: int(time.time()))  # reached at once
    saves = Saves()
    sessions = manager(tmp_path, saves, duration="10s")
    said: list[str] = []
    name = container_name(tmp_path, 1)
    if headless:
        code = sessions.run_prompt(LaunchRequest(tmp_path), Prompt(b"forever"), say=said.append)
    else:
        code = sessions.run(LaunchRequest(tmp_path), ["sleep", "infinity"], say=said.append)
    assert code == 124
    assert said[0].startswith(f"{name} reached its time limit") and len(said) == (2 if headless else 1)
    assert len(saves.saved) == 1  # ended as at any other end (a 'cci run' container's has no tool state to copy)
    assert sessions.driver.containers == {}


def test_an_exec_failure_before_the_deadline_is_reported_and_the_container_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(container: FakeContainer, argv: Sequence[str], **kwargs: object) -> ExecResult:
        raise BackendError("Incus went away")

    monkeypatch.setattr(FakeContainer, "exec", fails)
    sessions = manager(tmp_path, duration="1h")
    with pytest.raises(BackendError, match="Incus went away"):
        sessions.run(LaunchRequest(tmp_path), ["true"])
    assert sessions.driver.containers == {}


# --- the command line --------------------------------------------------------------------------------------


def run(*args: str, cwd: Path, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--workspace", str(cwd), *args], input=stdin)
    return result.exit_code, result.output


@pytest.mark.parametrize("args, message", [
    (("--format", "json", "--", "ls"), "cci: --format applies to a prompt only (a COMMAND's output is its own)"),
    (("--prompt", "hi", "--", "ls"), "cci: give a COMMAND or a prompt, not both"),
    (("--persistent", "--prompt", "hi"), "cci: --persistent does not apply to 'cci run' (it always uses a fresh "
                                         "container)"),
    (("--resume=../x", "--prompt", "hi"), "cci: '../x' is not a valid session id (ids are letters, digits, '.', '-' "
                                          "and '_'; see 'cci list --all')"),
    (("--prompt-file", "/nonexistent/prompt"), "cci: cannot read the prompt file /nonexistent/prompt: No such file or "
                                               "directory"),
    (("--prompt", " "), "cci: the prompt is empty"),
])
def test_run_refuses_bad_prompt_input_in_one_line(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    code, output = run("run", *args, cwd=tmp_path)
    assert (code, output) == (2, message + "\n")


def test_run_passes_the_options_after_the_command_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Sequence[str]] = []

    def fake_run(self, request, command, **kwargs):  # type: ignore[no-untyped-def]
        ran.append(command)
        return 3

    monkeypatch.setattr(SessionManager, "run", fake_run)
    monkeypatch.setattr("cci_core.cli.run_cmd.check_network_policy", lambda ctx: None)
    code, _output = run("run", "python3", "x.py", "--format", "json", "--prompt", "p", cwd=tmp_path)
    assert code == 3 and ran == [("python3", "x.py", "--format", "json", "--prompt", "p")]


def test_run_reads_the_prompt_from_standard_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[LaunchRequest, Prompt, bool]] = []

    def fake_run_prompt(self, request, prompt, *, latest=False, **kwargs):  # type: ignore[no-untyped-def]
        asked.append((request, prompt, latest))
        return 0

    monkeypatch.setattr(SessionManager, "run_prompt", fake_run_prompt)
    monkeypatch.setattr("cci_core.cli.run_cmd.check_network_policy", lambda ctx: None)
    code, _output = run("run", "--continue", "--prompt-file", "-", "--format", "json", cwd=tmp_path,
                        stdin="piped prompt\n")
    [(request, prompt, latest)] = asked
    assert code == 0 and prompt == Prompt(b"piped prompt\n", structured=True) and latest
    assert request.resume_from is None
    code, _output = run("run", "--resume=abc", "--prompt", "x", cwd=tmp_path)
    assert asked[-1][0].resume_from == "abc" and not asked[-1][2] and asked[-1][1] == Prompt(b"x")

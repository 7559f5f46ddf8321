"""Headless runs (``cci run --prompt``) and ``cci save`` on a real Incus.

The stand-in tool (tests/plugins/cci-stand-in-tool) answers a headless prompt line by line: ``prompt: <line>`` into
its history (``~/.stand-in/history-<id>.txt``, the state cci saves), ``answer: <line>`` on stdout; ``exit N`` sets
its exit code, ``stderr TEXT`` writes to its stderr, ``wait FILE`` waits for ``/workspace/FILE``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.conftest import CCI, assert_error, in_workspace, run_cci, status_of
from tests.integration.terminal import Terminal
from tests.stand_in import CONFIG, stand_in_workspace
from tests.workspace_config import write_trusted

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

CREDENTIAL = '{"token": "stand-in-credential-headless"}'
#: the line a headless run ends with on stderr
SAVED = re.compile(r"^session (\S+) saved: 'cci shell --resume=\1' continues it "
                   r"\('cci run --resume=\1 --prompt \.\.\.' headless\)$", re.MULTILINE)


@pytest.fixture
def workspace(tmp_path: Path, isolated_env: Path) -> Path:
    """A workspace whose sessions run the stand-in tool; the host user has its credential."""
    root = stand_in_workspace(tmp_path / "project")
    (isolated_env / ".stand-in").mkdir()
    (isolated_env / ".stand-in" / "credentials.json").write_text(CREDENTIAL)
    return root


def history(home: Path, session: str, tool: str = "stand-in") -> list[str]:
    """The stand-in's history as cci saved it on the host."""
    saved = home / ".cci" / f"sessions-{tool}" / session
    return (saved / ".stand-in" / f"history-{session}.txt").read_text().splitlines()


def saved_id(stderr: str) -> str:
    match = SAVED.search(stderr)
    assert match, stderr
    return match.group(1)


def assert_no_credential_saved(home: Path) -> None:
    for path in (home / ".cci").rglob("*"):
        if path.is_file():
            assert b"stand-in-credential" not in path.read_bytes(), path


class Lines:
    """The lines a stream gives, read as they come (a thread), each awaited with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{text!r} did not come within {timeout} s; seen: {self.seen}") from None
            assert line, f"the stream ended without {text!r}; seen: {self.seen}"
            self.seen.append(line)

    def rest(self, timeout: float = 60) -> str:
        """Everything up to the end of the stream."""
        while not self.seen or self.seen[-1] != "":
            self.seen.append(self._lines.get(timeout=timeout))
        return "".join(self.seen)


def test_a_headless_run_streams_returns_the_code_and_leaves_a_session_to_resume(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path,
) -> None:
    prompt = "hello from the prompt\nstderr to-the-error-stream\nwait go\nexit 7\n"
    process = subprocess.Popen([str(CCI), "--workspace", str(workspace), "run", "--prompt", prompt],
                               env=cci_environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = Lines(process.stdout), Lines(process.stderr)  # type: ignore[arg-type]
        out.wait_for("waiting for go")  # streamed while the tool runs: it waits for the file below
        assert process.poll() is None
        assert [container_name(workspace, 1)] == in_workspace(incus, workspace.resolve())
        (workspace / "go").touch()
        assert process.wait(timeout=120) == 7
    finally:
        process.kill()
    stdout, stderr = out.rest(), err.rest()
    assert stdout.splitlines() == ["answer: hello from the prompt", "answer: stderr to-the-error-stream",
                                   "waiting for go", "answer: wait go", "answer: exit 7"]
    assert "to-the-error-stream\n" in stderr and "Traceback" not in stderr
    session = saved_id(stderr)
    assert in_workspace(incus, workspace.resolve()) == []  # ended and deleted
    assert history(isolated_env, session) == [f"started {session}", "prompt: hello from the prompt",
                                              "prompt: stderr to-the-error-stream", "prompt: wait go",
                                              "prompt: exit 7"]
    assert_no_credential_saved(isolated_env)

    # continued headless, then interactively: the same session, its history kept
    again = run_cci("--workspace", str(workspace), "run", f"--resume={session}", "--prompt", "and again",
                    env=cci_environ)
    assert (again.returncode, again.stdout) == (0, "answer: and again\n"), again.stderr
    assert saved_id(again.stderr) == session
    assert history(isolated_env, session)[-2:] == [f"resumed {session}", "prompt: and again"]
    terminal.start("shell", f"{CCI} --workspace {workspace} shell --resume={session}", {**cci_environ, "TERM": "xterm"})
    screen = terminal.wait_for("shell", f"resumed {session}")
    assert "prompt: hello from the prompt" in screen and "prompt: and again" in screen


def test_format_json_with_the_prompt_from_a_pipe(workspace: Path, driver: IncusDriver, incus: pylxd.Client,
                                                 cci_environ: dict[str, str], isolated_env: Path) -> None:
    result = subprocess.run([str(CCI), "--workspace", str(workspace), "run", "--prompt-file", "-", "--format", "json"],
                            input="first\nsecond\nexit 3\n", env=cci_environ, capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 3, result.stderr
    session = saved_id(result.stderr)
    assert json.loads(result.stdout) == {"session_id": session, "lines": 3, "exit_code": 3}  # nothing else on stdout
    assert history(isolated_env, session)[1:] == ["prompt: first", "prompt: second", "prompt: exit 3"]


def test_bad_prompts_and_a_tool_without_headless_mode_are_refused_with_nothing_started(
    workspace: Path, tmp_path: Path, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]
) -> None:
    plugin = tmp_path / "site"
    (plugin / "fake_plain_tool-1.0.dist-info").mkdir(parents=True)
    (plugin / "fake_plain_tool-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plain-tool\n"
                                                                       "Version: 1.0\n")
    (plugin / "fake_plain_tool-1.0.dist-info" / "entry_points.txt").write_text("[cci]\nplain = fake_plain_tool\n")
    (plugin / "fake_plain_tool.py").write_text(
        "from cci_core.api import ToolAdapter, hookimpl\n\n"
        "class Plain(ToolAdapter):\n"
        "    name, summary, default_binary, state_dir = 'plain', 'no headless mode', 'bash', '.plain'\n\n"
        "    def command(self, session_id, *, resume):\n"
        "        return [self.binary]\n\n"
        "@hookimpl\n"
        "def cci_register(register):\n"
        "    register.add_tool(Plain)\n")
    environ = {**cci_environ, "PYTHONPATH": str(plugin)}
    started = time.monotonic()
    result = run_cci("--workspace", str(workspace), "--tool", "plain", "run", "--prompt", "hi", env=environ)
    assert_error(result, 2, "the tool plain has no headless mode, so 'cci run --prompt' cannot run it")
    os.mkfifo(workspace / "prompt.fifo")  # nothing writes to it: reading it would block
    result = run_cci("--workspace", str(workspace), "run", "--prompt-file", str(workspace / "prompt.fifo"),
                     env=cci_environ)
    assert_error(result, 2, f"the prompt file {workspace / 'prompt.fifo'} is not a regular file")
    assert time.monotonic() - started < 30
    assert in_workspace(incus, workspace.resolve()) == []


@pytest.mark.parametrize("headless", [True, False])
def test_a_run_past_its_duration_limit_is_stopped_with_124_and_saved(
    headless: bool, workspace: Path, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str],
    isolated_env: Path
) -> None:
    write_trusted(workspace, f'{CONFIG}\n[limits]\nduration = "10s"\n')
    started = time.monotonic()
    command = ["--prompt", "before the limit\nwait never"] if headless else ["--", "sleep", "600"]
    result = run_cci("--workspace", str(workspace), "run", *command, env=cci_environ, timeout=300)
    assert result.returncode == 124, (result.stdout, result.stderr)
    assert time.monotonic() - started < 120
    assert re.search(r"^cci-\S+ reached its time limit", result.stderr, re.MULTILINE), result.stderr
    assert in_workspace(incus, workspace.resolve()) == []
    if headless:
        session = saved_id(result.stderr)
        assert "prompt: before the limit" in history(isolated_env, session)


def test_the_real_claude_code_runs_headless_and_fails_as_it_does_without_a_login(
    tmp_path: Path, driver: IncusDriver, incus: pylxd.Client, claude_environ: dict[str, str], isolated_env: Path
) -> None:
    workspace = tmp_path / "project"
    workspace.mkdir()
    started = time.monotonic()
    result = run_cci("--workspace", str(workspace), "run", "--prompt", "say hi", env=claude_environ, timeout=300)
    assert (result.returncode, result.stdout) == (1, "Not logged in · Please run /login\n"), result.stderr
    session = saved_id(result.stderr)
    assert (isolated_env / ".cci" / "sessions-claude" / session / "metadata.json").is_file()

    structured = run_cci("--workspace", str(workspace), "run", "--prompt", "say hi", "--format", "json",
                         env=claude_environ, timeout=300)
    assert structured.returncode == 1, structured.stderr
    answer = json.loads(structured.stdout)
    assert (answer["is_error"], answer["result"]) == (True, "Not logged in · Please run /login")
    assert answer["session_id"] == saved_id(structured.stderr)  # cci's id is Claude's
    assert time.monotonic() - started < 150  # two launches; Claude gives up at once, without the network
    assert in_workspace(incus, workspace.resolve()) == []


def test_save_while_attached_writes_the_saved_copy_now(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path
) -> None:
    name = container_name(workspace, 1)
    terminal.start("one", f"{CCI} --workspace {workspace} shell", {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("one", "started ")
    terminal.keys("one", "typed-before-the-first-save", "Enter")
    terminal.wait_for("one", "noted: typed-before-the-first-save")

    first = run_cci("--workspace", str(workspace), "save", env=cci_environ)  # this workspace's session
    assert first.returncode == 0, first.stderr
    match = re.fullmatch(rf"saved session (\S+) of {name} to (\S+)\n", first.stdout)
    assert match, first.stdout
    session, where = match.groups()
    assert Path(where) == isolated_env / ".cci" / "sessions-stand-in" / session
    assert history(isolated_env, session)[-1] == "typed-before-the-first-save"
    written = (Path(where) / "metadata.json").stat().st_mtime_ns

    terminal.keys("one", "typed-before-the-second-save", "Enter")
    terminal.wait_for("one", "noted: typed-before-the-second-save")
    # two saves at once (as the attached cci's own would be): one after the other, each whole
    saves = [subprocess.Popen([str(CCI), "save", name], env=cci_environ, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for save in saves:
        out, err = save.communicate(timeout=120)
        assert (save.returncode, out) == (0, f"saved session {session} of {name} to {where}\n"), err
    assert (Path(where) / "metadata.json").stat().st_mtime_ns != written
    assert history(isolated_env, session)[-2:] == ["typed-before-the-first-save", "typed-before-the-second-save"]
    assert sorted(path.name for path in Path(where).parent.iterdir() if not path.name.endswith(".lock")) == [session]
    assert_no_credential_saved(isolated_env)
    assert status_of(incus, name) == "running" and "CCI-EXITED" not in terminal.screen("one")  # still attached

    result = run_cci("save", "no-such-container", env=cci_environ)
    assert_error(result, 2, "no container named 'no-such-container'")

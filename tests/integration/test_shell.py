"""The interactive shell, driven as a person would: a terminal on the host (tmux), keys in, screen out."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cci_core.config import Config
from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.conftest import CCI, run_cci

pytestmark = pytest.mark.incus


class Terminal:
    """A host tmux server of our own with one window running a command: our user's terminal."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True).stdout

    def start(self, window: str, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
        script = f"env -i {exports} {command}; echo CCI-EXITED-$?; sleep 600"
        self.tmux("new-session", "-d", "-s", window, "-x", "120", "-y", "30", script)

    def keys(self, window: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", window, *keys)

    def screen(self, window: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", window, "-S", "-100")

    def wait_for(self, window: str, text: str, timeout: float = 60) -> str:
        """Wait until ``text`` is on the screen (polls the screen; fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(window)
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear within {timeout} s; the screen shows:\n{screen}")
            time.sleep(0.2)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal(f"cci-test-{os.getpid()}")
    yield term
    subprocess.run(["tmux", "-L", term.socket, "kill-server"], capture_output=True, check=False)


def test_shell_detach_attach_and_poweroff(config: Config, driver: IncusDriver, terminal: Terminal,
                                          cci_environ: dict[str, str]) -> None:
    name = container_name(config.workspace, 1)
    terminal.start("one", f"{CCI} --workspace {config.workspace} shell", {**cci_environ, "TERM": "xterm"})
    # the tool runs first (claude is not in the test image), then the user is in bash, in /workspace
    terminal.wait_for("one", "claude: command not found")
    terminal.wait_for("one", f"code@{name}:/workspace$")
    terminal.keys("one", "echo marker-$((6*7)) > ~/note; cat ~/note", "Enter")
    terminal.wait_for("one", "marker-42")
    terminal.keys("one", "C-b", "d")
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert f"detached from {name}" in screen
    assert driver.get(name).status() == "running"
    listing = run_cci("list", env=cci_environ)
    assert f"{name}  running  ephemeral" in listing.stdout

    terminal.start("two", f"sh -c 'cd {config.workspace} && {CCI} attach'", {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("two", f"code@{name}:/workspace$")
    terminal.keys("two", "cat ~/note", "Enter")
    terminal.wait_for("two", "marker-42")
    terminal.keys("two", "sudo poweroff", "Enter")
    screen = terminal.wait_for("two", "CCI-EXITED-0")
    assert "session ended: saved, container deleted" in screen
    assert not driver.exists(name)


def test_exit_in_bash_keeps_the_container_and_attach_gives_a_new_shell(
    config: Config, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    name = container_name(config.workspace, 1)
    terminal.start("one", f"{CCI} --workspace {config.workspace} shell", {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("one", f"code@{name}:/workspace$")
    terminal.keys("one", "exit", "Enter")
    terminal.wait_for("one", "CCI-EXITED-0")
    assert driver.get(name).status() == "running"
    terminal.start("two", f"{CCI} attach {name}", {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("two", f"code@{name}:/workspace$")
    sent = run_cci("tmux", "send", name, "echo typed-by-automation", env=cci_environ)
    assert sent.returncode == 0, sent.stderr
    terminal.wait_for("two", "typed-by-automation\n")
    captured = run_cci("tmux", "capture", name, env=cci_environ)
    assert "typed-by-automation" in captured.stdout
    sessions = run_cci("tmux", "list", env=cci_environ)
    assert sessions.stdout.startswith(f"{name}: cci: 1 windows") and "(attached)" in sessions.stdout


def test_persistent_shell_reuses_its_container(config: Config, driver: IncusDriver, terminal: Terminal,
                                               cci_environ: dict[str, str]) -> None:
    name = container_name(config.workspace, 1)
    command = f"{CCI} --workspace {config.workspace} shell --persistent"
    terminal.start("one", command, {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("one", f"code@{name}:/workspace$")
    terminal.keys("one", "touch ~/installed-once && sudo poweroff", "Enter")
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert "session ended: saved; container kept" in screen
    assert driver.get(name).status() == "stopped"
    terminal.start("two", command, {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("two", f"code@{name}:/workspace$")
    terminal.keys("two", "ls ~/installed-once && echo still-there", "Enter")
    terminal.wait_for("two", "still-there")


def test_shell_without_a_terminal_is_refused(config: Config, cci_environ: dict[str, str]) -> None:
    result = run_cci("--workspace", str(config.workspace), "shell", env=cci_environ)
    assert (result.returncode, result.stderr) == (
        2, "cci: 'cci shell' needs a terminal (for scripts and CI use 'cci run -- CMD')\n")


def test_attach_with_nothing_running(config: Config, cci_environ: dict[str, str], tmp_path: Path) -> None:
    result = run_cci("attach", "no-such-container", env=cci_environ)
    assert result.returncode == 2
    assert result.stderr == "cci: 'cci attach' needs a terminal (for scripts and CI use 'cci run -- CMD')\n"

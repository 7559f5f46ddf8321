"""The interactive shell, driven as a person would: a terminal on the host (tmux), keys in, screen out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.config import Config
from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.conftest import CCI, run_cci, status_of, wait_until_gone
from tests.integration.terminal import Terminal

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus


def start_shell(terminal: Terminal, config: Config, cci_environ: dict[str, str]) -> str:
    """Run 'cci shell' for the workspace in terminal window "one"; return the container's name once bash is up."""
    name = container_name(config.workspace, 1)
    terminal.start("one", f"{CCI} --workspace {config.workspace} shell", {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("one", f"code@{name}:/workspace$")
    return name


def test_shell_detach_attach_and_poweroff(config: Config, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal,
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
    assert status_of(incus, name) == "running"
    listing = run_cci("list", env=cci_environ)
    assert f"{name}  running  ephemeral" in listing.stdout

    terminal.start("two", f"sh -c 'cd {config.workspace} && {CCI} attach'", {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("two", f"code@{name}:/workspace$")
    terminal.keys("two", "cat ~/note", "Enter")
    terminal.wait_for("two", "marker-42")
    terminal.keys("two", "sudo poweroff", "Enter")
    screen = terminal.wait_for("two", "CCI-EXITED-0")
    assert "session ended: saved and deleted in the background" in screen
    wait_until_gone(incus, name)


def test_a_poweroff_that_waits_for_a_process_ignoring_sigterm_ends_the_session(
    config: Config, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    # systemd's last step of a poweroff kills tmux at once, then waits (90 s by default) for a root daemon that
    # ignores SIGTERM: the container stops long after the attach ended, and is still an end, never a detach
    name = start_shell(terminal, config, cci_environ)
    terminal.keys("one", "sudo setsid -f sh -c 'trap \"\" TERM; while :; do sleep 1; done' </dev/null >/dev/null 2>&1"
                  " && echo daemon-$((6*7))", "Enter")
    terminal.wait_for("one", "daemon-42")
    terminal.keys("one", "sudo poweroff", "Enter")
    screen = terminal.wait_for("one", "CCI-EXITED-", timeout=240)
    assert "detached" not in screen and f"waiting for {name} to stop" in screen, screen
    # saved and deleted by this cci, or (when cci commands of other test runs share the project) by the
    # first cci command that saw it stopped
    ended = ("session ended: saved and deleted in the background",
             f"session ended: another cci command is ending {name}")
    assert any(f"{line}\nCCI-EXITED-0" in screen for line in ended), screen
    wait_until_gone(incus, name)


def test_a_session_killed_from_another_terminal_ends_the_attached_shell_cleanly(
    config: Config, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    name = start_shell(terminal, config, cci_environ)
    killed = run_cci("kill", "--force", name, env=cci_environ)
    assert killed.returncode == 0, killed.stderr
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert "session ended: another cci command" in screen and "Traceback" not in screen
    assert not incus.instances.exists(name)


def test_an_attach_cut_off_while_tmux_runs_on_is_left_running(
    config: Config, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    name = start_shell(terminal, config, cci_environ)
    container = driver.get(name)
    deadline = time.monotonic() + 10
    # tmux says "[terminated]"; seen once in CI: no match although the prompt was on the screen, so try
    # again briefly, and show the processes if it never matches
    # the client: cci's attach started the session ('new-session -A'), and the server it forked has the same
    # command line; the server's parent is init, the client's is none (the exec came from outside)
    client = ('for pid in $(pgrep -f "^tmux (attach-session|new-session)"); do '
              '[ "$(ps -o ppid= -p "$pid" | tr -d " ")" = 0 ] && kill -TERM "$pid" && exit 0; done; exit 1')
    while (killed := container.exec(["sh", "-c", client])).exit_code == 1 \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert killed.exit_code == 0, (killed.stderr, container.exec(["ps", "-eo", "pid,ppid,stat,args"]).stdout)
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert f"the attach to {name} ended without a detach, but its tmux session runs on" in screen, screen
    assert "waiting for" not in screen and "session ended" not in screen, screen
    assert status_of(incus, name) == "running"


def test_exit_in_bash_keeps_the_container_and_attach_gives_a_new_shell(
    config: Config, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    name = start_shell(terminal, config, cci_environ)
    terminal.keys("one", "exit", "Enter")
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert f"the shell in {name} exited; the container keeps running: 'cci attach {name}' starts" in screen and "detached" not in screen
    assert status_of(incus, name) == "running"
    terminal.start("two", f"{CCI} attach {name}", {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("two", f"code@{name}:/workspace$")
    sent = run_cci("tmux", "send", name, "echo typed-by-automation", env=cci_environ)
    assert sent.returncode == 0, sent.stderr
    terminal.wait_for("two", "typed-by-automation\n")
    captured = run_cci("tmux", "capture", name, env=cci_environ)
    assert "typed-by-automation" in captured.stdout
    sessions = run_cci("tmux", "list", env=cci_environ)
    ours = [line for line in sessions.stdout.splitlines() if line.startswith(f"{name}: ")]  # other runs' too
    assert len(ours) == 1 and ours[0].startswith(f"{name}: cci: 1 windows") and "(attached)" in ours[0], sessions


def test_persistent_shell_reuses_its_container(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                               terminal: Terminal,
                                               cci_environ: dict[str, str]) -> None:
    name = container_name(config.workspace, 1)
    command = f"{CCI} --workspace {config.workspace} shell --persistent"
    terminal.start("one", command, {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("one", f"code@{name}:/workspace$")
    terminal.keys("one", "touch ~/installed-once && sudo poweroff", "Enter")
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert "session ended: saved; container kept" in screen
    assert status_of(incus, name) == "stopped"
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

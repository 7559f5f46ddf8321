"""The real Claude Code in the real default image, driven as a person would: a terminal on the host, keys in, screen out.

The image (alias ``cci-test-claude``) is what ``cci build`` makes without the image
server; scripts/incus-test-env builds it. Nothing here reaches the internet: the
sessions' network has NAT off, so Claude Code runs offline with fake credentials.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.config import Config
from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.docker_archive import busybox_image
from tests.integration.conftest import CCI, ClaudeImage, labels_on, run_cci, wait_until_gone
from tests.integration.terminal import Terminal

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

#: fake OAuth credentials in Claude Code's shape: it takes them as a Pro login (it checks them only online)
CREDENTIALS = {"claudeAiOauth": {"accessToken": "sk-ant-oat01-fake-access", "refreshToken": "sk-ant-ort01-fake-refresh",
                                 "expiresAt": 4102444800000, "scopes": ["user:inference", "user:profile"],
                                 "subscriptionType": "pro"}}
ACCOUNT = {"oauthAccount": {"accountUuid": "00000000-0000-4000-8000-0000000000a1",
                            "emailAddress": "fake-user@example.invalid",
                            "organizationUuid": "00000000-0000-4000-8000-0000000000b2"}}
#: what Claude Code 2.1.332 shows for them: the plan of the login it read, and once asked something, that it is
#: offline (it cannot tell that the tokens are fake); with no (or unusable) credentials it says "Not logged in"
PLAN_SHOWN = "Claude Pro"
OFFLINE_SHOWN = "reach the API server"
NOT_LOGGED_IN = "Not logged in"
PROMPT = "remember the marker zebra-42"


def wait_until_off_screen(terminal: Terminal, window: str, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text in (screen := terminal.screen(window)):
        assert time.monotonic() < deadline, f"{text!r} still on the screen after {timeout} s:\n{screen}"
        time.sleep(0.2)


def inside(driver: IncusDriver, name: str, script: str) -> str:
    """Run ``script`` as root in container ``name``; its output."""
    result = driver.get(name).exec(["sh", "-c", script])
    assert result.exit_code == 0, (script, result.stdout, result.stderr)
    return result.stdout


def claude_command_line(driver: IncusDriver, name: str) -> str:
    """The command line of the Claude Code that cci started in container ``name`` (not its helper processes)."""
    lines = inside(driver, name, "ps -o args= -C claude || true").splitlines()
    started = [line for line in lines if line.startswith("claude --")]
    assert len(started) == 1, lines
    return started[0]


def test_claude_code_in_a_shell_detached_attached_ended_and_resumed(
    config: Config, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, claude_environ: dict[str, str],
    claude_image: ClaudeImage,
    isolated_env: Path,
) -> None:
    (isolated_env / ".claude").mkdir()
    (isolated_env / ".claude" / ".credentials.json").write_text(json.dumps(CREDENTIALS))
    (isolated_env / ".claude.json").write_text(json.dumps(ACCOUNT))
    env = {**claude_environ, "TERM": "xterm"}
    name = container_name(config.workspace, 1)
    banner = f"Claude Code v{claude_image.version}"

    terminal.start("one", f"{CCI} --workspace {config.workspace} shell", env)
    screen = terminal.wait_for("one", banner, timeout=120)
    screen = terminal.wait_for("one", PLAN_SHOWN)  # it read the injected login
    assert "/workspace" in screen and NOT_LOGGED_IN not in screen, screen
    session = labels_on(incus, name)["session"]
    assert f"--session-id {session}" in claude_command_line(driver, name)
    modes = inside(driver, name, "stat -c '%a %U:%G %n' /home/code/.claude/.credentials.json /home/code/.claude.json")
    assert modes.splitlines() == ["600 code:code /home/code/.claude/.credentials.json",
                                  "600 code:code /home/code/.claude.json"], modes
    assert json.loads(inside(driver, name, "cat /home/code/.claude/.credentials.json")) == CREDENTIALS
    settings = json.loads(inside(driver, name, "cat /home/code/.claude.json"))  # the host's, merged with cci's keys
    assert settings["oauthAccount"] == ACCOUNT["oauthAccount"] and settings["hasCompletedOnboarding"] is True
    terminal.keys("one", "-l", PROMPT)
    terminal.keys("one", "Enter")
    terminal.wait_for("one", OFFLINE_SHOWN)
    terminal.keys("one", "Escape")  # stop its retries: the prompt goes back into the input line
    wait_until_off_screen(terminal, "one", OFFLINE_SHOWN)  # (keys right after an Escape would be Meta-keys)

    terminal.keys("one", "C-b", "d")
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert f"detached from {name}" in screen
    terminal.start("two", f"sh -c 'cd {config.workspace} && {CCI} attach'", env)
    terminal.wait_for("two", PROMPT)  # Claude's screen is back, with the conversation
    terminal.wait_for("two", banner)
    terminal.keys("two", "C-u")  # empty the input line
    terminal.keys("two", "-l", "/exit")
    terminal.keys("two", "Enter")
    terminal.wait_for("two", f"code@{name}:/workspace$")  # the shell after the tool
    terminal.keys("two", "docker info --format 'docker-{{.OSType}}'", "Enter")
    terminal.wait_for("two", "docker-linux")  # the session's user reaches Docker without sudo
    terminal.keys("two", "sudo poweroff", "Enter")
    screen = terminal.wait_for("two", "CCI-EXITED-0")
    assert "session ended: saved and deleted in the background" in screen, screen
    wait_until_gone(incus, name)

    terminal.start("three", f"{CCI} --workspace {config.workspace} shell --resume", env)
    screen = terminal.wait_for("three", PROMPT, timeout=120)  # the conversation, continued
    assert banner in screen and "No conversation found" not in screen, screen
    assert f"--resume {session}" in claude_command_line(driver, name)
    conversation = inside(driver, name, f"cat /home/code/.claude/projects/-workspace/{session}.jsonl")
    assert PROMPT in conversation


@pytest.fixture
def user_dir(driver: IncusDriver) -> Iterator[Path]:
    """A directory of the non-root test user's, for its home and workspace (the pytest directories are root's)."""
    root = Path(tempfile.mkdtemp(prefix="cci-claude-"))
    shutil.chown(root, incus_env.TEST_USER, incus_env.TEST_USER)
    yield root
    shutil.rmtree(root)


def test_claude_gh_and_a_git_commit_owned_by_the_host_user_in_one_run(
    user_dir: Path, claude_environ: dict[str, str], claude_image: ClaudeImage
) -> None:
    user = pwd.getpwnam(incus_env.TEST_USER)
    home, workspace = user_dir / "home", user_dir / "workspace"
    for directory in (home, workspace):
        directory.mkdir()
        os.chown(directory, user.pw_uid, user.pw_gid)
    script = ("set -e; claude --version; gh --version | head -n 1; echo made inside > f.txt; git init -q; git add f.txt;"
              "git -c user.name=t -c user.email=t@example.invalid commit -q -m from-inside; git log --format=%s")
    result = run_cci("--workspace", str(workspace), "run", "--", "sh", "-c", script,
                     env={**claude_environ, "HOME": str(home)}, user=incus_env.TEST_USER)
    assert result.returncode == 0, result
    claude, gh, commit = result.stdout.splitlines()
    assert (claude, gh.split()[:2], commit) == (f"{claude_image.version} (Claude Code)", ["gh", "version"],
                                                "from-inside"), result
    made = [workspace / "f.txt", workspace / ".git", *(workspace / ".git").rglob("*")]
    assert len(made) > 10  # the repository's objects, refs, index and logs
    for path in made:
        assert (path.lstat().st_uid, path.lstat().st_gid) == (user.pw_uid, user.pw_gid), path


def test_docker_runs_an_image_made_on_the_host_with_the_workspace_mounted(
    config: Config, driver: IncusDriver, claude_environ: dict[str, str]
) -> None:
    """No registry and no download: the image comes as a docker-archive tarball in the workspace."""
    busybox_image(config.workspace / "busybox.tar", "cci-test/busybox:1", incus_env.CACHE_DIR)
    (config.workspace / "hello.txt").write_text("made on the host\n")
    script = ("set -e; timeout 60 sh -c 'until [ -S /run/docker.sock ]; do sleep 0.1; done';"
              "docker load -q -i busybox.tar; docker run --rm -v /workspace:/w cci-test/busybox:1 /bin/busybox cat /w/hello.txt")
    result = run_cci("--workspace", str(config.workspace), "run", "--", "sh", "-c", script, env=claude_environ)
    # as the session's user, without sudo
    assert (result.returncode, result.stdout) == (0, "Loaded image: cci-test/busybox:1\nmade on the host\n"), result

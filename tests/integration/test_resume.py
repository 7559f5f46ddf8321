"""Saved sessions and resume on a real Incus, with the stand-in tool (a third-party plugin from its own package).

The stand-in tool writes ``~/.stand-in/history-<id>.txt`` in the container: "started <id>" for a new
session, each line typed into it, and "resumed <id>" on resume (which fails when the history is missing).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, labels_on, run_cci, status_of, wait_stopped, wait_until_gone
from tests.integration.terminal import Terminal
from tests.stand_in import stand_in_workspace

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

SECRETS = {"AWS_SECRET_ACCESS_KEY": "aws-host-secret", "GITHUB_TOKEN": "gh-host-secret",
           "SSH_AUTH_SOCK": "/tmp/ssh-host-agent.sock"}
CREDENTIAL = '{"token": "stand-in-credential-v1"}'


@pytest.fixture
def workspace(tmp_path: Path, isolated_env: Path) -> Path:
    """A workspace whose sessions run the stand-in tool; the host user has its credential and an ~/.ssh."""
    root = stand_in_workspace(tmp_path / "project")
    (isolated_env / ".stand-in").mkdir()
    (isolated_env / ".stand-in" / "credentials.json").write_text(CREDENTIAL)
    (isolated_env / ".ssh").mkdir()
    (isolated_env / ".ssh" / "id_ed25519").write_text("host-private-key")
    return root


def shell(terminal: Terminal, window: str, workspace: Path, env: dict[str, str], *flags: str) -> None:
    terminal.start(window, f"{CCI} --workspace {workspace} shell {' '.join(flags)}",
                   {**env, **SECRETS, "TERM": "xterm"})


def in_container(name: str, script: str, env: dict[str, str]) -> str:
    result = run_cci("container", "exec", name, "--", "sh", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def saved_sessions(env: dict[str, str]) -> list[dict[str, object]]:
    result = run_cci("list", "--all", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["sessions"])


def session_of(incus: pylxd.Client, name: str) -> str:
    return labels_on(incus, name)["session"]


def assert_no_credential_saved(home: Path) -> None:
    for path in (home / ".cci").rglob("*"):
        if path.is_file():
            assert b"stand-in-credential" not in path.read_bytes(), path
            assert path.name != "credentials.json", path


def test_resume_continues_the_session_with_nothing_of_the_host_inside(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path
) -> None:
    first = container_name(workspace, 1)
    shell(terminal, "one", workspace, cci_environ)
    terminal.wait_for("one", "started ")
    session = session_of(incus, first)
    terminal.keys("one", "hello-from-the-first-container", "Enter")
    terminal.wait_for("one", "noted: hello-from-the-first-container")

    # nothing of the host's environment, keys or agent inside; the credential is there, private
    environments = in_container(first, r"cat /proc/[0-9]*/environ | tr '\0' '\n'", cci_environ)
    for key, value in SECRETS.items():
        assert key not in environments and value not in environments
    assert in_container(first, "grep -rls host-private-key /root /home/code /tmp; echo $?", cci_environ) == "1\n"
    assert in_container(first, "stat -c '%a %u' /home/code/.stand-in/credentials.json; "
                               "cat /home/code/.stand-in/settings.json", cci_environ).startswith("600 1000\n")
    assert '"trusted": true' in in_container(first, "cat /home/code/.stand-in/settings.json", cci_environ)

    in_container(first, "poweroff", cci_environ)  # as 'sudo poweroff' in the session
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert "session ended: saved and deleted in the background" in screen
    wait_until_gone(incus, first)
    [saved] = saved_sessions(cci_environ)
    assert (saved["id"], saved["tool"], saved["workspace"]) == (session, "stand-in", str(workspace.resolve()))
    assert_no_credential_saved(isolated_env)

    # slot 1 is busy with another session: the resume lands in slot 2, same session, same history
    shell(terminal, "other", workspace, cci_environ)
    terminal.wait_for("other", "started ")
    (isolated_env / ".stand-in" / "credentials.json").write_text(CREDENTIAL.replace("v1", "v2"))
    shell(terminal, "two", workspace, cci_environ, f"--resume={session}")
    screen = terminal.wait_for("two", f"resumed {session}")
    assert f"started {session}" in screen and "hello-from-the-first-container" in screen
    second = container_name(workspace, 2)
    assert session_of(incus, second) == session
    assert "stand-in-credential-v2" in in_container(second, "cat /home/code/.stand-in/credentials.json",
                                                    cci_environ)
    terminal.keys("two", "C-b", "d")
    terminal.wait_for("two", "CCI-EXITED-0")  # detach saves too
    assert_no_credential_saved(isolated_env)
    history = (isolated_env / ".cci" / "sessions-stand-in" / session / ".stand-in" / f"history-{session}.txt")
    assert history.read_text().splitlines()[-1] == f"resumed {session}"


def test_persistent_resume_restarts_the_same_container(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, cci_environ, "--persistent")
    terminal.wait_for("one", "started ")
    session = session_of(incus, name)
    in_container(name, "touch /home/code/installed-once && poweroff", cci_environ)
    assert "saved; container kept" in terminal.wait_for("one", "CCI-EXITED-0")

    shell(terminal, "two", workspace, cci_environ, "--persistent", "--resume")
    terminal.wait_for("two", f"resumed {session}")
    assert in_container(name, "ls /home/code/installed-once", cci_environ) == "/home/code/installed-once\n"


@pytest.mark.parametrize("stop", ["poweroff inside", "incus stop by hand"])
def test_a_session_whose_cci_was_killed_is_saved_by_the_next_command(
    stop: str, workspace: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str],
    incus: pylxd.Client, isolated_env: Path,
) -> None:
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, cci_environ)
    terminal.wait_for("one", "started ")
    session = session_of(incus, name)
    terminal.keys("one", "typed-before-the-crash", "Enter")
    terminal.wait_for("one", "noted: typed-before-the-crash")
    terminal.kill_command("one")  # kill -9 of cci: the container runs on, nobody watches it
    terminal.wait_for("one", "CCI-EXITED-137")
    assert status_of(incus, name) == "running"

    if stop == "poweroff inside":
        in_container(name, "poweroff", cci_environ)
    else:
        subprocess.run(["incus", "stop", "--force", "--project", incus_env.PROJECT, name], check=True)
    assert wait_stopped(incus, name, 60)

    listing = run_cci("list", "--all", "--format", "json", env=cci_environ)  # any command finishes it
    assert listing.returncode == 0, listing.stderr
    assert not incus.instances.exists(name)
    assert [saved["id"] for saved in json.loads(listing.stdout)["sessions"]] == [session]
    history = isolated_env / ".cci" / "sessions-stand-in" / session / ".stand-in" / f"history-{session}.txt"
    assert "typed-before-the-crash" in history.read_text()


def test_resume_refuses_foreign_and_path_like_ids(
    workspace: Path, tmp_path: Path, terminal: Terminal, cci_environ: dict[str, str], isolated_env: Path
) -> None:
    from cci_core.session_store import SavedSession, SessionStore

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    SessionStore(isolated_env / ".cci").save(
        SavedSession("foreign-1", "stand-in", str(elsewhere), "cci-x-1", 1, False, "", "", Path()), lambda d: None)
    shell(terminal, "one", workspace, cci_environ, "--resume=foreign-1")
    screen = terminal.wait_for("one", "CCI-EXITED-2")
    assert "cci: session foreign-1 belongs to another workspace" in screen
    shell(terminal, "two", workspace, cci_environ, "--resume")
    assert "cci: no saved stand-in session for" in terminal.wait_for("two", "CCI-EXITED-5")

    result = run_cci("--workspace", str(workspace), "shell", "--resume=../x", env=cci_environ)
    assert (result.returncode, result.stderr.splitlines()[0]) == (
        2, "cci: '../x' is not a valid session id (ids are letters, digits, '.', '-' and '_'; "
           "see 'cci list --all')")

